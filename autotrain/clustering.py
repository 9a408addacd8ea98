"""Group near-duplicate feedback so one rule is generated per cluster instead of N near-identical rules.

Pure standard library (no scikit-learn or model downloads; ComplaintIndex, for intake's comparison with
every stored complaint, uses scipy.sparse). Each text is NFC-normalised and folded
with `autotrain.text.fold` (lower case, Vietnamese diacritics stripped, đ → d, punctuation → spaces), so
"Trời nóng quá" and "troi nong qua" are the same text. Every word is padded with a space on each side and cut
into character 3-, 4- and 5-grams (scikit-learn's "char_wb" analyser); n-grams tolerate typos, missing
tones and inflected spellings ("khoac"/"khoác", "lun"/"lùn") better than whole words. The grams are weighted
by raw count times smoothed IDF (ln((1 + n) / (1 + df)) + 1), scikit-learn's defaults, and each vector is
scaled to unit length once, so the cosine of two texts is a plain sparse dot product.

Clustering is single-link agglomeration: every pair whose cosine reaches the threshold is joined with a
union-find. It is O(n²) in pairs, kept fast by sparse dict vectors with norms folded in up front, a C-level
key intersection per pair, and skipping pairs that are already in one cluster. Measured on this machine
(Python 3.11, 2 CPUs, 10 runs) on the 500 short texts of tests/test_clustering.py, which prints the figure:
about 0.29 s at the default threshold (0.21–0.33 s), and about 0.39 s (0.38–0.64 s) with every one of the
124,750 pairs compared (threshold above 1, nothing merges).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autotrain.text import fold

NGRAM_SIZES = (3, 4, 5)

# Chosen by experiment on the paraphrase fixture in tests/test_clustering.py: 31 complaints, four intended
# groups of 5–6 paraphrases (typed with and without diacritics) and 11 unrelated singletons, several of which
# share words with a group on purpose ("Ảnh sản phẩm bị mờ", "Bot gợi ý đúng ý mình, cảm ơn nhiều",
# "Áo khoác giao tới bị rách"). With IDF taken from the batch, single-link keeps every intended group whole
# for any threshold up to 0.428 (the weakest link the "tone" group needs; the others need 0.445–0.484),
# and keeps every other pair apart for any threshold above 0.364 (the closest cross pair: "Ảnh sản phẩm bị
# mờ" vs "goi y san pham het hang roi", which share only "sản phẩm"). On its first 16 items (the issue's
# examples) alone the gap is wider, (0.269, 0.415]. 0.40 sits near the middle of the narrower gap, leaning
# high because a false merge (one rule for two different problems, one of them lost) costs more than a false
# split (two near-duplicate rules, which issue 7's near-duplicate check is there to flag).
DEFAULT_THRESHOLD = 0.40


def complaint_text(feedback_text: str, query: str) -> str:
    """What two feedbacks are compared on: the complaint, and the question it answers."""
    return f"{feedback_text} {query}"


@dataclass(frozen=True)
class FeedbackText:
    feedback_id: str
    text: str  # what to compare: the caller passes feedback_text plus the query


@dataclass(frozen=True)
class Cluster:
    feedback_ids: tuple[str, ...]  # in input order; the first is the representative (the earliest)

    @property
    def size(self) -> int:
        return len(self.feedback_ids)

    @property
    def representative(self) -> str:
        return self.feedback_ids[0]


def ngrams(text: str) -> Counter[str]:
    """Character 3–5-grams of the folded text, each word padded with a space on both sides."""
    grams: Counter[str] = Counter()
    for word in fold(unicodedata.normalize("NFC", text)).split():
        padded = f" {word} "
        length = len(padded)
        for size in NGRAM_SIZES:
            # a word shorter than the gram size still yields itself, padded, as one gram
            grams.update(padded[start : start + size] for start in range(max(1, length - size + 1)))
    return grams


@dataclass(frozen=True)
class DocumentFrequencies:
    """In how many stored feedbacks each gram occurs, out of `documents`: the corpus the weights come from.

    Kept by the store as feedback arrives, so a pair of texts gets the same similarity whatever else is in
    the batch (run-all) or under review (intake)."""

    documents: int
    counts: Mapping[str, int]

    @classmethod
    def of(cls, texts: Sequence[str]) -> DocumentFrequencies:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(ngrams(text).keys())
        return cls(len(texts), counts)

    def idf(self) -> tuple[dict[str, float], float]:
        """Smoothed IDF of every known gram, and of a gram no document has (df = 0)."""
        total = self.documents
        idf = {gram: math.log((1 + total) / (1 + count)) + 1.0 for gram, count in self.counts.items()}
        return idf, math.log(1 + total) + 1.0


def _unit_vector(grams: Counter[str], idf: dict[str, float], unseen_idf: float) -> dict[str, float]:
    """TF-IDF weights divided by the vector's norm, so a dot product is a cosine; an empty text gives {}."""
    vector = {gram: count * idf.get(gram, unseen_idf) for gram, count in grams.items()}
    norm = math.sqrt(sum(weight * weight for weight in vector.values()))
    if norm == 0.0:
        return {}
    return {gram: weight / norm for gram, weight in vector.items()}


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(a[gram] * b[gram] for gram in a.keys() & b.keys())


def _vectors(texts: Sequence[str], frequencies: DocumentFrequencies | None = None) -> list[dict[str, float]]:
    idf, unseen_idf = (frequencies or DocumentFrequencies.of(texts)).idf()
    return [_unit_vector(ngrams(text), idf, unseen_idf) for text in texts]


def similarity(a: str, b: str, corpus: Sequence[str] | DocumentFrequencies | None = None) -> float:
    """Cosine of the two texts' TF-IDF vectors, in [0, 1].

    IDF comes from `corpus` when given (texts, or the store's document frequencies; grams it lacks get the
    highest weight), otherwise from the pair itself. A text with no letters or digits has no vector and is
    similar to nothing (0.0), itself included.
    """
    frequencies = DocumentFrequencies.of(corpus) if isinstance(corpus, Sequence) else corpus
    left, right = _vectors([a, b], frequencies)
    return min(1.0, max(0.0, _cosine(left, right)))


def best_match(
    text: str,
    candidates: Sequence[tuple[str, Sequence[str]]],
    frequencies: DocumentFrequencies,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[str, float] | None:
    """The candidate (key, its texts) whose nearest text is most similar to `text`, when that similarity
    reaches `threshold` — single link, as cluster_feedback joins — or None."""
    idf, unseen_idf = frequencies.idf()
    vector = _unit_vector(ngrams(text), idf, unseen_idf)
    if not vector:
        return None
    best: tuple[str, float] | None = None
    for key, texts in candidates:
        for other in texts:
            score = _cosine(vector, _unit_vector(ngrams(other), idf, unseen_idf))
            if score >= threshold and (best is None or score > best[1]):
                best = (key, score)
    return best


SEGMENT_ROWS = 256  # texts added since the last segment was made, scored one by one until they make another


class ComplaintIndex:
    """best_match against many stored texts at once (intake compares each new feedback with the feedback of
    every rule under review or deployed). Each stored text's unit vector is computed once, into sparse
    matrices (scipy.sparse CSC: one row per text, one column per gram), so that scoring a new text is a
    sparse product in C over the columns of its grams, not a Python loop over thousands of texts. Texts
    added later go into small segments (SEGMENT_ROWS at a time; the latest few are scored one by one),
    merged as they grow like a log-structured tree, so adding one never rebuilds the whole matrix. The scores
    are best_match's, with the stored texts weighted by the frequencies the index was built with and the new
    text by the frequencies given for it."""

    def __init__(self, frequencies: DocumentFrequencies) -> None:
        self.frequencies = frequencies
        self._idf, self._unseen_idf = frequencies.idf()
        self._keys: list[str] = []
        self._columns: dict[str, int] = {}
        self._segments: list[Any] = []  # CSC matrices, in the order their texts were added
        self._recent: list[dict[int, float]] = []  # the texts after the last segment, as {column: weight}

    def add(self, key: str, text: str | Counter[str]) -> None:
        """Compare with `text` (or its ngrams, counted already) as one of `key`'s from now on."""
        counted = ngrams(text) if isinstance(text, str) else text
        row = {
            self._columns.setdefault(gram, len(self._columns)): weight
            for gram, weight in _unit_vector(counted, self._idf, self._unseen_idf).items()
        }
        self._keys.append(key)
        self._recent.append(row)
        if len(self._recent) >= SEGMENT_ROWS:
            self.seal()

    def seal(self) -> None:
        """Make the texts added since the last segment a segment (add does, every SEGMENT_ROWS; a bulk build
        calls it once at the end), merging segments of like size."""
        if not self._recent:
            return
        from scipy.sparse import csr_matrix, vstack  # imported on first use, not at start-up

        data = [weight for row in self._recent for weight in row.values()]
        indices = [column for row in self._recent for column in row]
        indptr = [0]
        for row in self._recent:
            indptr.append(indptr[-1] + len(row))
        width = max(1, len(self._columns))
        self._segments.append(csr_matrix((data, indices, indptr), shape=(len(self._recent), width)).tocsc())
        self._recent = []
        while len(self._segments) > 1 and self._segments[-1].shape[0] * 2 >= self._segments[-2].shape[0]:
            last, before = self._segments.pop(), self._segments.pop()
            before.resize((before.shape[0], width))
            last.resize((last.shape[0], width))
            self._segments.append(vstack([before, last], format="csc"))

    def best(
        self,
        text: str,
        frequencies: DocumentFrequencies,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        allowed: Callable[[str], bool] = lambda key: True,
    ) -> tuple[str, float] | None:
        """The key (among those `allowed`) whose nearest text is most similar to `text`, when that reaches
        `threshold`; of equal scores, the text added first, as in best_match."""
        idf, unseen_idf = frequencies.idf()
        query = {
            self._columns[gram]: weight
            for gram, weight in _unit_vector(ngrams(text), idf, unseen_idf).items()
            if gram in self._columns
        }
        if not query or not self._keys:
            return None
        import numpy as np  # with scipy (a dependency)

        parts = []
        for segment in self._segments:
            inside = [column for column in query if column < segment.shape[1]]
            columns = np.fromiter(inside, dtype=np.int64, count=len(inside))
            weights = np.fromiter((query[c] for c in inside), dtype=np.float64, count=len(inside))
            parts.append(segment[:, columns] @ weights)
        parts.append(
            np.asarray([sum(w * row.get(c, 0.0) for c, w in query.items()) for row in self._recent], dtype=np.float64)
        )
        scores = np.concatenate(parts)
        above = np.flatnonzero(scores >= threshold)
        verdicts: dict[str, bool] = {}
        for number in above[np.argsort(-scores[above], kind="stable")]:
            key = self._keys[int(number)]
            if key not in verdicts:
                verdicts[key] = allowed(key)
            if verdicts[key]:
                return key, float(scores[number])
        return None


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # the earlier item's root wins, so a root is always its cluster's first item
            if root_a < root_b:
                self.parent[root_b] = root_a
            else:
                self.parent[root_a] = root_b


def cluster_feedback(
    items: Sequence[FeedbackText],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    frequencies: DocumentFrequencies | None = None,
) -> list[Cluster]:
    """Group near-duplicate feedback: character n-gram (3–5 grams over the folded text, with word boundaries
    padded) TF-IDF vectors, cosine similarity, single-link agglomeration above `threshold` (union-find).
    Every item is in exactly one cluster; clusters are ordered by their first item's position.

    IDF comes from `frequencies` (the stored corpus) when given, else from `items`; either way a word every
    complaint shares ("bot", "gợi ý") counts for little. Two
    items join when their cosine is at least `threshold`; a text with nothing to compare (empty, only
    punctuation) stays alone.
    """
    vectors = _vectors([item.text for item in items], frequencies)
    groups = _UnionFind(len(vectors))
    for i, left in enumerate(vectors):
        if not left:
            continue
        for j in range(i + 1, len(vectors)):
            right = vectors[j]
            if right and groups.find(i) != groups.find(j) and _cosine(left, right) >= threshold:
                groups.union(i, j)
    members: dict[int, list[str]] = {}
    for index, item in enumerate(items):
        members.setdefault(groups.find(index), []).append(item.feedback_id)
    # dicts keep insertion order, and each root is first met at its earliest member
    return [Cluster(tuple(ids)) for ids in members.values()]

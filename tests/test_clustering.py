"""Feedback clustering (issue 7, "Feedback clustering"): paraphrased Vietnamese complaints, typed with and
without diacritics, fall into the expected groups and unrelated ones stay apart."""

from __future__ import annotations

import itertools
import random
import time
import unicodedata

import pytest

from autotrain.clustering import (
    DEFAULT_THRESHOLD,
    SEGMENT_ROWS,
    Cluster,
    ComplaintIndex,
    DocumentFrequencies,
    FeedbackText,
    best_match,
    cluster_feedback,
    similarity,
)
from autotrain.text import fold

# (id, intended group, text). Groups are interleaved so that order and representatives are really tested.
# The "s…" rows are unrelated singletons; several share words with a group on purpose ("sản phẩm", "gợi ý",
# "áo khoác", "hàng", "cảm ơn") so that keeping them apart means something.
FIXTURE: list[tuple[str, str, str]] = [
    ("F01", "jacket", "Trời nóng quá mà AI còn tư vấn áo khoác"),
    ("F02", "maxi", "Mình thấp mà bot cứ gợi ý đầm maxi"),
    ("F03", "jacket", "troi nong 35 do ma bot goi y ao khoac"),
    ("F04", "size", "Sản phẩm bot gợi ý hết size rồi"),
    ("F05", "tone", "Bot trả lời dài dòng quá"),
    ("F06", "s-delivery", "Giao hàng chậm"),
    ("F07", "maxi", "minh dang lun ma AI goi y vay maxi dai"),
    ("F08", "jacket", "Nóng thế này ai mặc áo khoác nỉ"),
    ("F09", "size", "san pham goi y het hang het size"),
    ("F10", "tone", "tra loi dai dong qua, doc met"),
    ("F11", "s-colour", "Màu áo trong ảnh khác thực tế"),
    ("F12", "maxi", "Người thấp mặc đầm maxi bị chìm, sao AI vẫn gợi ý"),
    ("F13", "jacket", "AI gợi ý áo khoác dày giữa trời nắng nóng"),
    ("F14", "size", "Gợi ý toàn món hết size M"),
    ("F15", "s-thanks", "Cảm ơn shop tư vấn nhiệt tình"),
    ("F16", "tone", "Câu trả lời quá dài, nói ngắn gọn thôi"),
    ("F17", "jacket", "Trời 36 độ mà bot bảo mặc áo khoác"),
    ("F18", "s-returns", "Đổi trả hàng rất lâu"),
    ("F19", "maxi", "Tôi lùn 1m50 mà AI toàn gợi ý váy maxi"),
    ("F20", "size", "Bấm vào món bot gợi ý thì hết size"),
    ("F21", "s-price", "Giá trên web khác giá ở cửa hàng"),
    ("F22", "tone", "Trả lời dài quá, đọc mệt"),
    ("F23", "jacket", "nang nong the nay goi y ao khoac lam gi"),
    ("F24", "s-photo", "Ảnh sản phẩm bị mờ"),
    ("F25", "maxi", "thap be ma mac dam maxi dai thi chim mat"),
    ("F26", "s-voucher", "Mã giảm giá không áp dụng được"),
    ("F27", "size", "goi y san pham het hang roi"),
    ("F28", "s-torn", "Áo khoác giao tới bị rách"),
    ("F29", "tone", "bot noi dai dong, can ngan gon hon"),
    ("F30", "s-praise", "Bot gợi ý đúng ý mình, cảm ơn nhiều"),
    ("F31", "s-fit", "Size áo bị rộng so với bảng size"),
]
GROUPS = ("jacket", "maxi", "size", "tone")


def items(fold_text: bool = False) -> list[FeedbackText]:
    return [FeedbackText(fid, fold(text) if fold_text else text) for fid, _, text in FIXTURE]


def expected_groups() -> set[frozenset[str]]:
    by_label: dict[str, set[str]] = {}
    for fid, label, _ in FIXTURE:
        by_label.setdefault(label, set()).add(fid)
    return {frozenset(ids) for ids in by_label.values()}


def as_sets(clusters: list[Cluster]) -> set[frozenset[str]]:
    return {frozenset(cluster.feedback_ids) for cluster in clusters}


def test_fixture_has_the_intended_shape() -> None:
    labels = [label for _, label, _ in FIXTURE]
    assert all(labels.count(group) >= 3 for group in GROUPS)
    assert sum(1 for label in labels if label.startswith("s-")) >= 3
    assert len({fid for fid, _, _ in FIXTURE}) == len(FIXTURE)


def test_paraphrases_group_exactly_as_intended() -> None:
    clusters = cluster_feedback(items())
    assert as_sets(clusters) == expected_groups()
    sizes = {cluster.feedback_ids[0]: cluster.size for cluster in clusters}
    assert sizes["F01"] == 6  # jacket
    assert sizes["F02"] == 5  # maxi
    assert sizes["F04"] == 5  # size
    assert sizes["F05"] == 5  # tone


def test_unrelated_feedback_stays_alone() -> None:
    clusters = cluster_feedback(items())
    singles = {fid for fid, label, _ in FIXTURE if label.startswith("s-")}
    alone = {cluster.feedback_ids[0] for cluster in clusters if cluster.size == 1}
    assert alone == singles


def test_grouping_does_not_depend_on_diacritics() -> None:
    folded = items(fold_text=True)
    assert all(not any(ord(ch) > 127 for ch in item.text) for item in folded)
    assert cluster_feedback(folded) == cluster_feedback(items())
    assert as_sets(cluster_feedback(folded)) == expected_groups()


def test_nfc_and_nfd_input_cluster_the_same() -> None:
    decomposed = [FeedbackText(item.feedback_id, unicodedata.normalize("NFD", item.text)) for item in items()]
    assert decomposed[0].text != items()[0].text
    assert cluster_feedback(decomposed) == cluster_feedback(items())
    assert similarity(unicodedata.normalize("NFD", "Trời nóng quá"), "troi nong qua") == pytest.approx(1.0)


def test_every_id_appears_exactly_once_and_order_is_stable() -> None:
    clusters = cluster_feedback(items())
    ids = [fid for cluster in clusters for fid in cluster.feedback_ids]
    assert sorted(ids) == sorted(fid for fid, _, _ in FIXTURE)
    assert len(ids) == len(set(ids))
    position = {fid: index for index, (fid, _, _) in enumerate(FIXTURE)}
    for cluster in clusters:
        # members in input order, so the representative is the earliest
        assert [position[fid] for fid in cluster.feedback_ids] == sorted(position[fid] for fid in cluster.feedback_ids)
    firsts = [position[cluster.feedback_ids[0]] for cluster in clusters]
    assert firsts == sorted(firsts)
    assert [cluster.feedback_ids[0] for cluster in clusters][:6] == ["F01", "F02", "F04", "F05", "F06", "F11"]


def test_result_does_not_depend_on_input_order_beyond_representatives() -> None:
    shuffled = items()
    random.Random(7).shuffle(shuffled)
    clusters = cluster_feedback(shuffled)
    assert as_sets(clusters) == expected_groups()
    position = {item.feedback_id: index for index, item in enumerate(shuffled)}
    assert all(cluster.feedback_ids[0] == min(cluster.feedback_ids, key=position.get) for cluster in clusters)


def test_similarity_of_identical_and_unrelated_texts() -> None:
    assert similarity("Bot trả lời dài dòng quá", "Bot trả lời dài dòng quá") == pytest.approx(1.0)
    assert similarity("Bot trả lời dài dòng quá", "bot tra loi dai dong qua!!") == pytest.approx(1.0)
    assert similarity("Giao hàng chậm", "Mình thấp mà bot cứ gợi ý đầm maxi") < 0.05
    assert similarity("Giao hàng chậm", "Câu trả lời quá dài, nói ngắn gọn thôi") < 0.05
    corpus = [text for _, _, text in FIXTURE]
    paraphrase = similarity("Trời nóng quá mà AI còn tư vấn áo khoác", "troi nong 35 do ma bot goi y ao khoac", corpus)
    unrelated = similarity("Trời nóng quá mà AI còn tư vấn áo khoác", "Đổi trả hàng rất lâu", corpus)
    assert paraphrase >= DEFAULT_THRESHOLD > unrelated
    assert 0.0 <= unrelated < 0.1


def test_similarity_is_symmetric_and_bounded() -> None:
    texts = [text for _, _, text in FIXTURE]
    for a, b in itertools.pairwise(texts):
        forward, backward = similarity(a, b, texts), similarity(b, a, texts)
        assert forward == pytest.approx(backward)
        assert 0.0 <= forward <= 1.0


def test_threshold_controls_merging() -> None:
    assert [cluster.size for cluster in cluster_feedback(items(), threshold=1.01)] == [1] * len(FIXTURE)
    everything = cluster_feedback(items(), threshold=0.0)
    assert everything[0].feedback_ids[0] == "F01"
    assert len(everything) == 1  # threshold 0: every non-empty text joins every other one


def test_empty_input() -> None:
    assert cluster_feedback([]) == []


def test_one_item() -> None:
    assert cluster_feedback([FeedbackText("A", "Giao hàng chậm")]) == [Cluster(("A",))]
    assert Cluster(("A",)).size == 1


@pytest.mark.parametrize("blank", ["", "   ", "\n\t", "?!…", "—"])
def test_empty_or_whitespace_text_stays_a_singleton(blank: str) -> None:
    batch = [
        FeedbackText("A", blank),
        FeedbackText("B", "Bot trả lời dài dòng quá"),
        FeedbackText("C", blank),
        FeedbackText("D", "bot tra loi dai dong qua"),
    ]
    clusters = cluster_feedback(batch, threshold=0.0)
    assert as_sets(clusters) == {frozenset({"A"}), frozenset({"B", "D"}), frozenset({"C"})}
    assert [cluster.feedback_ids for cluster in clusters] == [("A",), ("B", "D"), ("C",)]
    assert similarity(blank, blank) == 0.0
    assert similarity(blank, "Bot trả lời dài dòng quá") == 0.0


def test_duplicate_texts_always_join() -> None:
    batch = [FeedbackText(str(n), "Gợi ý toàn món hết size M") for n in range(4)]
    assert cluster_feedback(batch, threshold=0.999) == [Cluster(("0", "1", "2", "3"))]


def _five_hundred() -> list[FeedbackText]:
    """500 short complaints: fixture paraphrases with extra words, and random sentences from a shop vocabulary."""
    rng = random.Random(500)
    extra = "quần jean giày túi đen trắng váy chất vải mỏng đẹp xấu nhanh đơn hàng phí ship".split()
    vocabulary = [*sorted({word for _, _, text in FIXTURE for word in text.split()}), *extra]
    texts = []
    for n in range(500):
        if n % 2:
            _, _, base = FIXTURE[n % len(FIXTURE)]
            texts.append(f"{base} {' '.join(rng.choices(vocabulary, k=rng.randint(1, 4)))}")
        else:
            texts.append(" ".join(rng.choices(vocabulary, k=rng.randint(4, 14))))
    return [FeedbackText(f"L{n:03d}", text) for n, text in enumerate(texts)]


def test_five_hundred_items_cluster() -> None:
    batch = _five_hundred()
    started = time.perf_counter()
    clusters = cluster_feedback(batch)
    elapsed = time.perf_counter() - started
    print(f"\n500 items: {len(clusters)} clusters in {elapsed:.3f} s")
    ids = [fid for cluster in clusters for fid in cluster.feedback_ids]
    assert sorted(ids) == [item.feedback_id for item in batch]
    assert clusters[0].feedback_ids[0] == "L000"
    assert 1 < len(clusters) < 500


def test_the_complaint_index_scores_as_best_match_does() -> None:
    """Intake's index (a sparse matrix, and the texts added since it was built) finds what best_match finds."""
    words = "trời nóng quá áo khoác tư vấn size vừa giao hàng chậm ảnh mờ màu sai lùn cao váy".split()
    chooser = random.Random(7)
    texts = [" ".join(chooser.choice(words) for _ in range(chooser.randint(2, 7))) for _ in range(600)]
    frequencies = DocumentFrequencies.of(texts)
    index = ComplaintIndex(frequencies)
    candidates: list[tuple[str, list[str]]] = []
    for number, text in enumerate(texts):
        key = f"R{number % 150}"
        index.add(key, text)
        candidates.append((key, [text]))
        if number == 10:
            index.seal()  # a first segment of 11 texts; then segments of SEGMENT_ROWS, merged as they grow
    assert 600 > 11 + 2 * SEGMENT_ROWS  # so there are segments, merges, and texts scored one by one
    allowed = {f"R{n}" for n in range(0, 150, 2)}
    for query in [*texts[:40], "trời nóng quá mà tư vấn áo khoác", "zzz"]:
        expected = best_match(query, [c for c in candidates if c[0] in allowed], frequencies, threshold=0.3)
        found = index.best(query, frequencies, threshold=0.3, allowed=allowed.__contains__)
        assert (found is None) == (expected is None), query
        if found and expected:
            # the same best score (texts repeat: of equal ones, rounding may pick another key than best_match)
            assert abs(found[1] - expected[1]) < 1e-9, (query, found, expected)
            assert found[0] in allowed

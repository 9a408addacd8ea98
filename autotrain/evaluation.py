"""Replay before deploy: what an evaluation of a proposed rule is, and the decisions about it that are plain
rules — which cases to replay, when the result passes, and (offline) which deployed lines a candidate
contradicts.

A *case* is a question the chatbot is asked again, once with the rules as they are and once with the candidate
applied to its file exactly as a deploy would:
- `complaint`: the rule's own feedback and up to k others of its group — the answer should no longer have the
  problem the user described;
- `regression`: up to n earlier complaints whose rules are deployed in the same file — each should still be
  fixed;
- `praise`: up to m praised answers — the new answer should be at least as good.

The judge (a port: Claude in bot/, with structured output) says for each whether it holds, with a reason.
An evaluation passes when the complaint is fixed, no earlier fix broke and no praised answer got worse.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field

from autotrain.text import fold


class CaseKind(StrEnum):
    COMPLAINT = "complaint"
    REGRESSION = "regression"
    PRAISE = "praise"


class EvaluationStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to replay with or judge by (offline), or nothing to replay
    ERROR = "error"  # the chatbot or the judge failed; review goes on, and a retry may work


@dataclass(frozen=True)
class EvaluationLimits:
    complaints: int = 3  # AUTOTRAIN_EVAL_COMPLAINTS: the rule's own feedback and up to this many of its group
    regressions: int = 8  # AUTOTRAIN_EVAL_REGRESSIONS: earlier fixes of the same file
    praise: int = 3  # AUTOTRAIN_EVAL_PRAISE: praised answers
    token_budget: int = 60_000  # AUTOTRAIN_EVAL_TOKEN_BUDGET: replay and judge tokens for one rule at most
    revisions: int = 1  # AUTOTRAIN_EVAL_REVISIONS: rounds of revising a candidate that does not fix it
    concurrency: int = 4  # replays and judgments at once


class EvalCase(BaseModel):
    kind: CaseKind
    feedback_id: str
    query: str
    feedback_text: str  # the user's words (untrusted, fenced for the judge)
    user_id: str | None = None
    praised_answer: str | None = None  # praise: the answer the user liked
    answer_before: str | None = None  # with the rules as they are
    answer_after: str | None = None  # with the candidate
    holds: bool | None = None  # the judge's verdict: fixed / still fixed / kept (None: not judged)
    reason: str | None = None
    tokens: int = 0


class Evaluation(BaseModel):
    rule_id: str
    rule_version: str  # which candidate (see candidate_version): an evaluation is never run twice for one
    status: EvaluationStatus
    fixes_complaint: bool | None = None
    regressions: int = 0  # earlier fixes the candidate breaks
    praise_lost: int = 0
    cases: int = 0
    summary: str
    at: datetime
    new_rule: str | None = None  # the candidate judged (after a revision: the revised line)
    revised_from: str | None = None  # the line a revision replaced, when the revision was better
    conflicts: list[str] = Field(default_factory=list)  # deployed lines of the file the candidate contradicts
    tokens: int = 0
    latency_ms: int = 0
    detail: list[EvalCase] = Field(default_factory=list)


def candidate_version(module_name: str, old_rule: str | None, new_rule: str) -> str:
    """Identifies a candidate: the same rule with the same line in the same file is never replayed twice."""
    digest = hashlib.sha256(f"{module_name}\n{old_rule or ''}\n{new_rule}".encode()).hexdigest()
    return digest[:16]


def verdict(cases: Sequence[EvalCase]) -> tuple[EvaluationStatus, bool | None, int, int]:
    """(status, fixes the complaint, earlier fixes broken, praised answers lost) of judged cases."""
    complaints = [c for c in cases if c.kind is CaseKind.COMPLAINT]
    if not complaints:
        return EvaluationStatus.SKIPPED, None, 0, 0
    fixes = all(c.holds for c in complaints)
    broken = sum(1 for c in cases if c.kind is CaseKind.REGRESSION and c.holds is False)
    lost = sum(1 for c in cases if c.kind is CaseKind.PRAISE and c.holds is False)
    passed = fixes and not broken and not lost
    return (EvaluationStatus.PASSED if passed else EvaluationStatus.FAILED), fixes, broken, lost


def score(cases: Sequence[EvalCase]) -> tuple[int, int]:
    """Which of two candidates is better: more complaints fixed, then fewer regressions and praise lost."""
    fixed = sum(1 for c in cases if c.kind is CaseKind.COMPLAINT and c.holds)
    harmed = sum(1 for c in cases if c.kind is not CaseKind.COMPLAINT and c.holds is False)
    return fixed, -harmed


def summary_line(status: EvaluationStatus, cases: Sequence[EvalCase], reason: str | None = None) -> str:
    """The card's one line: "Replayed: fixes the complaint · 0 of 8 earlier fixes broken · 3 of 3 praised
    answers kept"."""
    if status is EvaluationStatus.SKIPPED:
        return f"Not replayed: {reason}" if reason else "Not replayed"
    if status is EvaluationStatus.ERROR:
        return f"Replay failed: {reason}" if reason else "Replay failed"
    complaints = [c for c in cases if c.kind is CaseKind.COMPLAINT]
    regressions = [c for c in cases if c.kind is CaseKind.REGRESSION]
    praise = [c for c in cases if c.kind is CaseKind.PRAISE]
    fixed = sum(1 for c in complaints if c.holds)
    parts = [
        "fixes the complaint"
        if fixed == len(complaints)
        else f"does not fix the complaint ({fixed} of {len(complaints)} fixed)"
    ]
    if regressions:
        broken = sum(1 for c in regressions if c.holds is False)
        parts.append(f"{broken} of {len(regressions)} earlier fixes broken")
    if praise:
        kept = sum(1 for c in praise if c.holds)
        parts.append(f"{kept} of {len(praise)} praised answers kept")
    return "Replayed: " + " · ".join(parts)


# ---------------------------------------------------------------------- offline: contradictions

_NEGATIONS = ("khong", "dung", "tranh", "never", "not", "don", "dont", "no")  # fold() splits "don't"
# words every rule of a stylist uses ("gợi ý sản phẩm cho khách"): sharing them says nothing about a conflict
_STOP = frozenset(
    (
        "a an and the to for of in on with khi cho va la co cua mot nhung cac nay do thi ma se luon always nen"
        " goi y san pham khach hang ban hoi truoc sau moi lan kem recommend suggest customer product products"
    ).split()
)


def _words(line: str) -> tuple[bool, set[str]]:
    words = [w for w in re.split(r"[^0-9a-z']+", fold(line)) if w]
    negated = any(w in _NEGATIONS for w in words)
    return negated, {w for w in words if w not in _STOP and w not in _NEGATIONS and len(w) > 1}


def contradictions(candidate: str, deployed: Sequence[str], *, min_shared: int = 2) -> list[str]:
    """The deployed lines the candidate contradicts, by a heuristic: one is negated and the other is not, and
    they share at least `min_shared` content words ("KHÔNG gợi ý áo khoác dày" against "Luôn ưu tiên áo
    khoác/dày"). The judge, when configured, has the last word."""
    negated, words = _words(candidate)
    found = []
    for line in deployed:
        other_negated, other = _words(line)
        if negated != other_negated and len(words & other) >= min_shared:
            found.append(line)
    return found


# ---------------------------------------------------------------------- ports


class ReplayAnswer(BaseModel):
    answer: str
    tokens: int = 0
    latency_ms: int = 0


class ChatbotReplay(Protocol):
    """Asks the chatbot (or Claude playing it) a question with exactly the given rule files' contents."""

    name: str

    async def replay(self, query: str, files: Mapping[str, str], *, user_id: str | None) -> ReplayAnswer:
        """`files`: module name → the file's text as the chatbot would use it (rendered, rules applied)."""
        ...


class Judgment(BaseModel):
    holds: bool  # complaint: the problem is gone; regression: still fixed; praise: at least as good
    reason: str
    tokens: int = 0


class Revision(BaseModel):
    rule: str | None  # the better line, normalised; None: no better idea (or not a usable line)
    tokens: int = 0
    reasoning: str = ""


class ReplayJudge(Protocol):
    """Claude with structured output; the user's words are fenced, untrusted data."""

    name: str

    async def judge(self, case: EvalCase, *, candidate: str) -> Judgment: ...

    async def revise(self, candidate: str, case: EvalCase, reason: str) -> Revision:
        """A better line from a failed replay and the judge's reason (`rule` None: no better idea)."""
        ...

"""The offline rule generator: known patterns first, otherwise a specific draft rule built from the feedback.

What it proposes for one feedback, given the current rule lines of every file:

1. When the complaint is about a rule that is already there, that line made more explicit, replacing it
   (old_rule = the line, new_rule = a stronger wording, see `strengthen`), warned EXISTING_RULE_NOT_FOLLOWED,
   the reasoning quoting the line. Never a copy of it: a copy deploys as a no-op and tells the reviewer
   nothing, while old → new on the card shows at once which line the bot ignores, and a reviewer who finds
   the line itself wrong rewrites it. A rule is "already there" when the line the matched pattern (or the
   draft) would add is a line of its file; or, with no pattern, when the deployed rule this complaint came
   back after (`recurrence`) is still in its file, or when the feedback says the bot did not follow a rule
   and one line shares its words.
2. Otherwise a known pattern's rule (patterns.py).
3. Otherwise a draft quoting the situation and the complaint, for an admin to rewrite; unless the feedback or
   the query it quotes carries an injection, link, code or secret flag (content_checks): a rule file is no
   place to repeat those, so it declines.

With `recurrence` (the deployed rule that did not prevent this complaint), the reasoning starts by naming it
and the warnings include RECURRENCE_OF_DEPLOYED_RULE.

Languages. What the reviewer reads (the reasoning, a decline's reason) is written in the current language at
generation time (autotrain.i18n: `AUTOTRAIN_LANGUAGE`, or the Slack user's who asked). The rule itself is a
line of the chatbot's prompt, read by the chatbot and not by the reviewer, so it never follows that setting:
a pattern's rule is the Vietnamese line it was written as (it replaces a line of the stylist's Vietnamese
files), a draft is in the language of the feedback it quotes (`draft_rule`), and a strengthened line keeps
the language of the line (`strengthen`).
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from autotrain.content_checks import content_warnings
from autotrain.generators.patterns import (
    DEFAULT_MODULE,
    HEURISTIC_PATTERNS,
    MODULE_KEYWORDS,
    NOT_FOLLOWED_PHRASES,
    RULE_WORDS,
    HeuristicPattern,
)
from autotrain.i18n import N_, _
from autotrain.models import (
    MAX_RULE_LENGTH,
    Feedback,
    FeedbackType,
    GenerationInfo,
    Rule,
    RuleProposal,
    RuleType,
    RuleWarning,
)
from autotrain.ports import GenerationResult
from autotrain.rulefiles import RULE_PREFIX, same_rule
from autotrain.text import (
    PhraseMatcher,
    fold,
    has_diacritics,
    looks_vietnamese,
    one_line,
    shorten,
    strip_invisible,
    words,
)

DRAFT_CONFIDENCE = {FeedbackType.BUG: 0.4, FeedbackType.SUGGESTION: 0.45, FeedbackType.PRAISE: 0.3}
# what a draft's reasoning says, by the feedback's type (the sentence whole, for a translation to order)
DRAFT_REASONING = {
    FeedbackType.BUG: N_(
        "No known pattern matched this bug report; the draft turns the feedback into an instruction for"
        " {module_name}. Edit it before approving."
    ),
    FeedbackType.SUGGESTION: N_(
        "No known pattern matched this suggestion; the draft turns the feedback into an instruction for"
        " {module_name}. Edit it before approving."
    ),
    FeedbackType.PRAISE: N_(
        "No known pattern matched this praise; the draft turns the feedback into an instruction for"
        " {module_name}. Edit it before approving."
    ),
}
# a line found by the recurrence it came back after, or by the words of the complaint, not by a pattern
RECURRENCE_CONFIDENCE = 0.6
REFERENCED_CONFIDENCE = 0.5

# How a line the bot did not follow is made more explicit, by language (Vietnamese?): first a prefix, then a
# closing check. A line with both is as explicit as this generator can make it.
EMPHASIS: dict[bool, tuple[str, str]] = {
    True: ("LUÔN tuân thủ, không có ngoại lệ: ", " — kiểm tra lại câu trả lời theo quy tắc này trước khi gửi"),
    False: ("ALWAYS, without exception: ", " — check every answer against this rule before sending"),
}

# words too common to say which line a complaint refers to
_FILLER = frozenset(
    words(
        "khi và là của cho các những một có không đã được thì mà với về bị nào này đó theo làm bot ai quy tắc "
        "định luật nguyên rule rules the a an to of and or for in on at is are was be it this that with about"
    )
)
_FILLER_BARE = frozenset(fold(word) for word in _FILLER)
# shares at least this many words with the complaint, and a quarter of its own
REFERENCE_MIN_WORDS = 3
REFERENCE_MIN_SHARE = 0.25


@dataclass(frozen=True)
class Declined:
    """No rule should come of this feedback, and why (GenerationResult.declined)."""

    reason: str


@dataclass(frozen=True)
class _Existing:
    """A line already in a file that the complaint is about, and how it was found (for the reasoning)."""

    module_name: str
    line: str
    found_by: str  # in the current language
    confidence: float
    rule_type: RuleType = RuleType.PROMPT_UPDATE
    lead: str = ""  # what the pattern says of such complaints (its reasoning, translated)
    note: str = ""  # anything else the reviewer should know, a sentence


class HeuristicRuleGenerator:
    name = "heuristic"
    quotes_feedback = True  # its drafts quote the complaint on purpose, for an admin to rewrite

    def __init__(
        self,
        allowed_modules: Sequence[str],
        patterns: Sequence[HeuristicPattern] = HEURISTIC_PATTERNS,
    ) -> None:
        self.allowed_modules = tuple(allowed_modules)
        self.patterns = tuple(patterns)
        # phrase lists prepared once, not per feedback
        self._matchers = [
            (
                pattern,
                PhraseMatcher(pattern.feedback_any),
                PhraseMatcher(pattern.context_any),
                PhraseMatcher(pattern.feedback_not),
            )
            for pattern in self.patterns
            if pattern.module_name in self.allowed_modules
        ]
        self._module_keywords = [
            (module_name, PhraseMatcher(keywords))
            for module_name, keywords in MODULE_KEYWORDS.items()
            if module_name in self.allowed_modules
        ]
        self._not_followed = PhraseMatcher(NOT_FOLLOWED_PHRASES)
        self._rule_words = PhraseMatcher(RULE_WORDS)

    async def generate(
        self,
        feedback: Feedback,
        current_rules: Mapping[str, Sequence[str]],
        *,
        recurrence: Rule | None = None,
    ) -> GenerationResult:
        started = time.perf_counter()
        decision = self.propose(feedback, current_rules, recurrence=recurrence)
        info = GenerationInfo(generator=self.name, latency_ms=int((time.perf_counter() - started) * 1000))
        if isinstance(decision, Declined):
            return GenerationResult(None, info, declined=decision.reason)
        return GenerationResult(decision, info)

    def propose(
        self,
        feedback: Feedback,
        current_rules: Mapping[str, Sequence[str]] | None = None,
        *,
        recurrence: Rule | None = None,
    ) -> RuleProposal | Declined:
        """The proposal for `feedback` (see the module's docstring for the order), or why there is none."""
        rules = current_rules or {}
        pattern = self.matching_pattern(feedback)
        if pattern is not None:
            proposal = pattern_proposal(pattern)
            existing = self._in_file(proposal, rules, _("the line this complaint's pattern proposes"))
            if existing is not None:
                existing = replace(existing, lead=proposal.reasoning, note=self._still_there(pattern, rules))
        else:
            existing = self._deployed_line(recurrence, rules) or self._referenced_line(feedback, rules)
            if existing is None:
                flags = flags_against_quoting(feedback)
                if flags:
                    return Declined(
                        _(
                            "no known pattern matched, and a draft would quote feedback flagged {flags}",
                            flags=", ".join(flags),
                        )
                    )
                proposal = self.draft(feedback)
                existing = self._in_file(proposal, rules, _("the line this feedback's draft would add"))
        if existing is not None:
            proposal = strengthened_proposal(existing)
        if recurrence is not None:
            proposal = with_recurrence(proposal, recurrence)
        return proposal

    def matching_pattern(self, feedback: Feedback) -> HeuristicPattern | None:
        for pattern, in_feedback, in_context, other_reading in self._matchers:
            if not _matches_unless_read_otherwise(in_feedback, other_reading, feedback.feedback_text):
                continue
            # each text on its own: the customer's query is often typed without accents, the answer never is
            if pattern.context_any and not in_context.matches(feedback.query, feedback.ai_response):
                continue
            return pattern
        return None

    def draft(self, feedback: Feedback) -> RuleProposal:
        module_name = self.choose_module(feedback)
        return RuleProposal(
            module_name=module_name,
            new_rule=draft_rule(feedback),
            reasoning=_(DRAFT_REASONING[feedback.feedback_type], module_name=module_name),
            confidence=DRAFT_CONFIDENCE[feedback.feedback_type],
        )

    def choose_module(self, feedback: Feedback) -> str:
        best, best_score = None, 0
        for module_name, keywords in self._module_keywords:
            score = keywords.count(feedback.feedback_text, feedback.query)
            if score > best_score:
                best, best_score = module_name, score
        if best is not None:
            return best
        return DEFAULT_MODULE if DEFAULT_MODULE in self.allowed_modules else self.allowed_modules[0]

    def says_rule_not_followed(self, feedback: Feedback) -> bool:
        """Whether it says a rule was not followed ("bot không làm theo quy tắc", "it ignored the rule"): a
        not-followed phrase and a rule word, in the complaint itself."""
        text = feedback.feedback_text
        return self._not_followed.matches(text) and self._rule_words.matches(text)

    # ------------------------------------------------------------------ lines already in the files

    def _in_file(self, proposal: RuleProposal, rules: Mapping[str, Sequence[str]], found_by: str) -> _Existing | None:
        line = _line_in(proposal.new_rule, rules.get(proposal.module_name, ()))
        if line is None:
            return None
        return _Existing(proposal.module_name, line, found_by, proposal.confidence, proposal.rule_type)

    def _deployed_line(self, recurrence: Rule | None, rules: Mapping[str, Sequence[str]]) -> _Existing | None:
        if recurrence is None or recurrence.module_name not in self.allowed_modules:
            return None
        line = _line_in(recurrence.new_rule, rules.get(recurrence.module_name, ()))
        if line is None:
            return None
        return _Existing(
            recurrence.module_name,
            line,
            _("the line {rule_id} deployed", rule_id=recurrence.rule_id),
            RECURRENCE_CONFIDENCE,
            recurrence.rule_type,
        )

    def _referenced_line(self, feedback: Feedback, rules: Mapping[str, Sequence[str]]) -> _Existing | None:
        """The line a complaint that says a rule was not followed shares the most words with, if it shares
        enough. Words are compared as the matcher does: folded only when the complaint has no diacritics."""
        if not self.says_rule_not_followed(feedback):
            return None
        bare = not has_diacritics(feedback.feedback_text)
        complaint = _content_words(feedback.feedback_text, bare)
        best: tuple[tuple[int, float], str, str] | None = None
        for module_name in self.allowed_modules:
            for line in rules.get(module_name, ()):
                own = _content_words(line, bare)
                shared = len(complaint & own)
                if not own or shared < max(REFERENCE_MIN_WORDS, math.ceil(REFERENCE_MIN_SHARE * len(own))):
                    continue
                key = (shared, shared / len(own))
                if best is None or key > best[0]:
                    best = (key, module_name, line.strip())
        if best is None:
            return None
        return _Existing(
            best[1],
            best[2],
            _("the feedback says the bot did not follow a rule, and this line shares its words"),
            REFERENCED_CONFIDENCE,
        )

    def _still_there(self, pattern: HeuristicPattern, rules: Mapping[str, Sequence[str]]) -> str:
        if not pattern.old_rule:
            return ""
        old = _line_in(pattern.old_rule, rules.get(pattern.module_name, ()))
        if old is None:
            return ""
        return _(
            "`{line}`, which that line replaces, is still there too (a canary's other share, or a hand edit): it"
            " may be what the bot followed.",
            line=old,
        )


def pattern_proposal(pattern: HeuristicPattern) -> RuleProposal:
    return RuleProposal(
        module_name=pattern.module_name,
        rule_type=pattern.rule_type,
        old_rule=pattern.old_rule,
        new_rule=pattern.new_rule,
        reasoning=_(pattern.reasoning),
        confidence=pattern.confidence,
    )


def strengthen(line: str) -> str:
    """`line` made more explicit: an emphatic prefix first, then a closing check. `line` itself (stripped) when
    it has both already, or when the stronger wording would not fit in a rule."""
    current = one_line(unicodedata.normalize("NFC", line))
    body = current[len(RULE_PREFIX) :] if current.startswith(RULE_PREFIX) else current.lstrip("-*• ")
    prefix, suffix = EMPHASIS[looks_vietnamese(body)]
    if not body.startswith(prefix):
        stronger = RULE_PREFIX + prefix + body
    elif not body.endswith(suffix):
        stronger = RULE_PREFIX + body + suffix
    else:
        return current
    return stronger if len(stronger) <= MAX_RULE_LENGTH else current


def strengthened_proposal(existing: _Existing) -> RuleProposal:
    new_rule = strengthen(existing.line)
    if same_rule(new_rule, existing.line):
        # validation makes this an append flagged as a duplicate: a card for a reviewer to rewrite, not a change
        how = _("It is already as explicit as this generator can make it: rewrite it by hand, or reject this.")
    else:
        how = _(
            "The bot did not follow it, so this rewords it to be more explicit, in place, instead of adding a "
            "copy; if the line itself is what is wrong, rewrite it."
        )
    found = _(
        "The complaint is about a rule already in {module_name} ({found_by}): `{line}`.",
        module_name=existing.module_name,
        found_by=existing.found_by,
        line=existing.line,
    )
    # the pattern's reasoning first, the note last, each its own sentence
    sentences = [f"{existing.lead}." if existing.lead else "", found, how, existing.note]
    return RuleProposal(
        module_name=existing.module_name,
        rule_type=existing.rule_type,
        old_rule=existing.line,
        new_rule=new_rule,
        reasoning=" ".join(sentence for sentence in sentences if sentence),
        confidence=existing.confidence,
        warnings=[RuleWarning.EXISTING_RULE_NOT_FOLLOWED],
    )


def with_recurrence(proposal: RuleProposal, recurrence: Rule) -> RuleProposal:
    """The proposal, saying which deployed rule did not prevent this complaint."""
    return proposal.model_copy(
        update={
            "reasoning": _(
                "{rule_id} (`{line}`) was deployed for this complaint, and it came back: {reasoning}",
                rule_id=recurrence.rule_id,
                line=one_line(recurrence.new_rule),
                reasoning=proposal.reasoning,
            ),
            "warnings": list(dict.fromkeys([*proposal.warnings, RuleWarning.RECURRENCE_OF_DEPLOYED_RULE])),
        }
    )


def flags_against_quoting(feedback: Feedback) -> list[str]:
    """The flags (injection, URL, code, secret) on the texts a draft quotes; a draft is made only without any."""
    flags: dict[str, None] = {}
    for text in (feedback.feedback_text, feedback.query):
        for warning in content_warnings(strip_invisible(text), check_copy=False):
            flags[warning.value] = None
    return list(flags)


def _matches_unless_read_otherwise(matcher: PhraseMatcher, other_reading: PhraseMatcher, text: str) -> bool:
    """A phrase of `matcher` is in `text` where no phrase of `other_reading` covers it."""
    hits = matcher.spans(text)
    if not hits or not other_reading.phrases:
        return bool(hits)
    others = other_reading.spans(text)
    return any(not any(o_start <= start and end <= o_end for _, o_start, o_end in others) for _, start, end in hits)


def _line_in(rule: str, lines: Iterable[str]) -> str | None:
    """The file's own spelling of `rule` (stripped), or of a stronger wording of it made here before, if it is
    one of `lines`: once "- LUÔN …: X" replaced X, a complaint about X is about that line, not a reason to add
    X again."""
    forms = [rule]
    while (stronger := strengthen(forms[-1])) != forms[-1]:
        forms.append(stronger)
    for form in reversed(forms):  # the strongest first: the line the bot sees, if a weaker one is left too
        line = next((line.strip() for line in lines if same_rule(line, form)), None)
        if line is not None:
            return line
    return None


def _content_words(text: str, bare: bool) -> set[str]:
    found = [fold(word) for word in words(text)] if bare else words(text)
    filler = _FILLER_BARE if bare else _FILLER
    return {word for word in found if len(word) > 1 and word not in filler}


def draft_rule(feedback: Feedback) -> str:
    """A readable instruction quoting the situation and the complaint, in the feedback's language."""
    query = shorten(feedback.query, 80)
    complaint = shorten(feedback.feedback_text, 160)
    vietnamese = looks_vietnamese(f"{feedback.feedback_text} {feedback.query}")
    if feedback.feedback_type is FeedbackType.PRAISE:
        if vietnamese:
            return f'- Khi khách hỏi "{query}": tiếp tục cách tư vấn được khách khen — "{complaint}"'
        return f'- When a customer asks "{query}": keep doing what the customer praised — "{complaint}"'
    if feedback.feedback_type is FeedbackType.SUGGESTION:
        if vietnamese:
            return f'- Khi khách hỏi "{query}": làm theo góp ý "{complaint}"'
        return f'- When a customer asks "{query}": follow the suggestion "{complaint}"'
    if vietnamese:
        return f'- Khi khách hỏi "{query}": tránh lỗi khách đã phản ánh — "{complaint}"'
    return f'- When a customer asks "{query}": avoid the reported problem — "{complaint}"'

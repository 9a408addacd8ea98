"""A stateful property test of the pure rule-file model (autotrain/ruleset.py): no database, no service.

The machine keeps a rule file's active changes the way autotrain/usecases/deploys.py does: a deploy (full or a
canary) appends its change, a rollback removes it, a promote swaps the change for its 100 % version in place, a
full deploy of a line a canary holds is appended like any other (derive takes the canary to 100 %; a wider
canary of it, to the wider share). Every write is
`derive(base, active)` with the JSON "version" bumped when the content changes; once no change is active the file
as it is becomes the next base. Rules are drawn from a small pool of lines, so they overlap: several replace the
same line, replace another rule's line, canary and full-deploy the same line. Both file formats, with bases that
may hold a byte-order mark, a duplicate line, CRLF line endings or another JSON layout.

After every step: the file is what its base and active changes derive (deploys.py would recognise it); it holds
exactly the lines of a plain reference model written here; rolling every change back (in two orders) gives the base
back, ignoring the version counter; a rolled-back rule's line is there only if the base or an active change
provides it; no line is there twice unless the base had it twice; and the JSON version never goes back.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from autotrain.ruleset import ActiveChange, derivation, derive, with_version

JSON_FILE, LINE_FILE = "fashion_rules.json", "prompt_v2.txt"
BOM = "\ufeff"

POOL = [
    "- Luôn hỏi dịp mặc (đi làm, đi chơi, dự tiệc) trước khi gợi ý",
    "- Luôn ưu tiên áo khoác/dày",
    "- Khi trời nóng: gợi ý áo thun cotton",
    "- Khi trời nóng: gợi ý váy lanh mỏng",
    "- Không gợi ý sản phẩm đã hết hàng",
]
HEADER = [
    "Bạn là stylist thời trang của cửa hàng, trò chuyện với khách bằng tiếng Việt.",
    "",
    "Quy tắc trả lời:",
]
TRAILER = ["", "Nếu khách hỏi ngoài chủ đề thời trang, lịch sự từ chối."]


def key(text: str | None) -> str:
    """Two rule texts are the same rule when they are equal once stripped and NFC-normalised."""
    return unicodedata.normalize("NFC", (text or "").strip())


# ---------------------------------------------------------------------- the reference model: a plain list


@dataclass(frozen=True)
class Line:
    text: str
    owner: str | None = None  # the rule id whose change wrote it (None: the base's)
    percent: int | None = None  # a canary's share
    replaces: str | None = None  # the line a canary replaces for its share
    is_rule: bool = True


def find(lines: list[Line], text: str | None) -> int | None:
    if not text:
        return None
    return next((i for i, line in enumerate(lines) if line.is_rule and key(line.text) == key(text)), None)


def reference(base: list[Line], changes: list[ActiveChange], *, json_file: bool) -> list[Line]:
    """What the file should hold: each change, in order, on the lines the ones before it left."""
    lines = list(base)
    for change in changes:
        full = change.rollout_percent >= 100
        held = find(lines, change.new_rule)
        if held is not None:  # the line is there already; a full deploy takes a canary of it to every user
            if full and lines[held].percent is not None:
                replaced = lines[held].replaces
                lines[held] = replace(lines[held], percent=None, replaces=None)
                gone = find(lines, replaced)
                if gone is not None:
                    del lines[gone]
            elif not full and lines[held].percent is not None and change.rollout_percent > lines[held].percent:
                lines[held] = replace(lines[held], percent=change.rollout_percent)  # a wider canary widens it
            continue
        new = Line(change.new_rule, owner=change.rule_id)
        old = find(lines, change.old_rule)
        if not full:
            new = replace(new, percent=change.rollout_percent)
            if old is not None:
                lines.insert(old + 1, replace(new, replaces=lines[old].text))
            else:
                lines.append(new)
        elif old is not None:
            lines[old] = new
        elif json_file:
            lines.append(new)
        else:  # after the last rule line (the file's prose around the rules stays where it is)
            rules = [i for i, line in enumerate(lines) if line.is_rule]
            lines.insert(rules[-1] + 1 if rules else len(lines), new)
    return lines


# ---------------------------------------------------------------------- reading a derived file


def json_data(content: bytes) -> dict:
    text = content.decode("utf-8")
    text = text.removeprefix(BOM)
    return json.loads(text) if text.strip() else {"version": 0, "rules": []}


def version_of(content: bytes) -> int:
    return int(json_data(content).get("version", 0))


def file_lines(content: bytes, *, json_file: bool) -> list[Line]:
    if json_file:
        return [
            Line(e["rule"], owner=e.get("rule_id"), percent=e.get("rollout_percent"), replaces=e.get("replaces"))
            for e in json_data(content)["rules"]
        ]
    text = content.decode("utf-8").removeprefix(BOM)
    return [Line(line, is_rule=line.startswith("- ")) for line in text.splitlines()]


def without_version(content: bytes, *, json_file: bool) -> bytes:
    """A JSON file with its "version" counter set to 0 (the one thing a derivation does not keep)."""
    return with_version(content, 0) if json_file else content


def _content_of(content: bytes) -> tuple[bool, object]:
    """A JSON file's BOM and data without its "version" counter."""
    data = json.loads(content.decode("utf-8-sig") or '{"rules": []}')
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key != "version"}
    return content.startswith(BOM.encode("utf-8")), data


# ---------------------------------------------------------------------- bases


@st.composite
def bases(draw: st.DrawFn) -> tuple[str, bytes, list[Line]]:
    """A rule file (JSON or lines), its bytes, and its lines as the reference model holds them."""
    json_file = draw(st.booleans())
    picked = draw(st.lists(st.sampled_from(POOL), max_size=4))
    if picked and draw(st.booleans()):  # a duplicate line
        picked.insert(draw(st.integers(0, len(picked))), draw(st.sampled_from(picked)))
    if picked and draw(st.booleans()):  # a line as a hand editor may have saved it: decomposed (NFD)
        at = draw(st.integers(0, len(picked) - 1))
        picked[at] = unicodedata.normalize("NFD", picked[at])
    bom = BOM if draw(st.booleans()) else ""
    if json_file:
        entries = [{"rule": text, **({"added_from": "seed"} if i % 2 else {})} for i, text in enumerate(picked)]
        data = {"version": draw(st.integers(0, 3)), "rules": entries}
        # also a file without a "version" key, or empty: the counter must still never go back
        layout = draw(st.sampled_from(["shipped", "indented", "version_last", "no_version", "empty"]))
        if layout == "empty":
            return JSON_FILE, bom.encode("utf-8"), []
        if layout == "no_version":
            body = json.dumps({"rules": entries}, ensure_ascii=False, indent=2) + "\n"
            return JSON_FILE, (bom + body).encode("utf-8"), [Line(text) for text in picked]
        if layout == "shipped":
            body = "".join(
                ["{\n", f'  "version": {data["version"]},\n', '  "rules": [\n']
                + [",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in entries)]
                + (["\n"] if entries else [])
                + ["  ]\n", "}\n"]
            )
        elif layout == "indented":
            body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        else:
            body = json.dumps({"rules": entries, "version": data["version"]}, ensure_ascii=False, indent=2)
        return JSON_FILE, (bom + body).encode("utf-8"), [Line(text) for text in picked]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    texts = [
        *(HEADER if draw(st.booleans()) else []),
        *picked,
        *(TRAILER if draw(st.booleans()) else []),
    ]
    body = newline.join(texts)
    if texts and draw(st.booleans()):  # or the last line without its line ending
        body += newline
    return LINE_FILE, (bom + body).encode("utf-8"), [Line(t, is_rule=t.startswith("- ")) for t in texts]


# ---------------------------------------------------------------------- the machine


class RuleFileMachine(RuleBasedStateMachine):
    @initialize(drawn=bases())
    def start(self, drawn: tuple[str, bytes, list[Line]]) -> None:
        self.module, self.original, self.base_lines = drawn
        self.json_file = self.module.endswith(".json")
        self.base = self.original  # the base the active changes derive from (the file, when none is active)
        self.current = self.original  # the file as written
        self.active: list[ActiveChange] = []
        self.rolled_back: list[ActiveChange] = []
        self.counter = 0

    def same(self, a: bytes, b: bytes) -> bool:
        if without_version(a, json_file=self.json_file) == without_version(b, json_file=self.json_file):
            return True
        # a base without a "version" key gets one once the counter is above 0: the same file otherwise
        return self.json_file and _content_of(a) == _content_of(b)

    # the writes, as deploys.py makes them (_derive): the version is bumped when the content changes

    def written(self, current: bytes, changes: list[ActiveChange]) -> bytes:
        if not self.json_file:
            return derive(self.base, changes, self.module)
        version = version_of(current)
        same = derive(self.base, changes, self.module, version=version)
        if same == current:
            return current
        after = derive(self.base, changes, self.module, version=version + 1)
        assert version_of(after) > version, f"version {version} -> {version_of(after)}: {after!r}"
        return after

    def write(self, changes: list[ActiveChange]) -> None:
        for outcome in derivation(self.current if not self.active else self.base, changes, self.module).outcomes:
            event(f"{self.module}: {outcome}")
        if not self.active:  # no change active: the file as it is is the base (deploys._file_model)
            self.base = self.current
        self.current = self.written(self.current, changes)
        self.active = changes

    @rule(
        new_rule=st.sampled_from(POOL),
        old_rule=st.none() | st.sampled_from(POOL),
        percent=st.sampled_from([100, 100, 10, 50]),
    )
    def deploy(self, new_rule: str, old_rule: str | None, percent: int) -> None:
        """A deploy to every user, or a canary (JSON files only: check_rollout refuses it on a line file)."""
        if not self.json_file:
            percent = 100
        self.counter += 1
        rule_id = f"r{self.counter}"
        entry = {"added_from": f"fb-{self.counter}", "rule_id": rule_id}
        self.write([*self.active, ActiveChange(rule_id, new_rule, old_rule, percent, entry)])

    def canaries(self) -> list[ActiveChange]:
        return [c for c in self.active if c.rollout_percent < 100]

    @precondition(lambda self: self.canaries())
    @rule(data=st.data())
    def promote(self, data: st.DataObject) -> None:
        canary = data.draw(st.sampled_from(self.canaries()), label="promote")
        self.write([c.promoted() if c.rule_id == canary.rule_id else c for c in self.active])

    @precondition(lambda self: self.active)
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        gone = data.draw(st.sampled_from(self.active), label="rollback")
        self.write([c for c in self.active if c.rule_id != gone.rule_id])
        self.rolled_back.append(gone)

    @precondition(lambda self: len(self.active) >= 2)
    @rule(data=st.data())
    def rollbacks_in_two_orders(self, data: st.DataObject) -> None:
        """Rolling back some of the changes one by one, in two orders, ends in the same file (but its version)."""
        ids = [c.rule_id for c in self.active]
        some = data.draw(st.lists(st.sampled_from(ids), min_size=1, unique=True), label="roll back")
        other = data.draw(st.permutations(some), label="in another order")
        ends = []
        same = self.same
        for order in (some, other):
            current, remaining = self.current, list(self.active)
            for rule_id in order:
                remaining = [c for c in remaining if c.rule_id != rule_id]
                current = self.written(current, remaining)
            ends.append(current)
            assert same(current, derive(self.base, remaining, self.module)), order
        assert same(ends[0], ends[1]), (some, other)

    # the properties, after every step

    @invariant()
    def check(self) -> None:
        content, json_file, same = self.current, self.json_file, self.same
        version = version_of(content) if json_file else None
        # the file is what its base and active changes derive (else deploys.py would adopt it as a hand edit);
        # with none active, deploys.py takes the file as it is for the next base
        if self.active:
            assert derive(self.base, self.active, self.module, version=version) == content
        # the lines it holds are the reference model's
        expected = reference(self.base_lines, self.active, json_file=json_file)
        if self.base != self.original:  # a later base is the original one, its version bumped
            assert same(self.base, self.original)
        held = file_lines(content, json_file=json_file)
        if json_file:
            assert held == expected, f"file {held}\nreference {expected}"
        else:
            assert [line.text for line in held] == [line.text for line in expected]
            text = content.decode("utf-8")
            if b"\r\n" in self.original:
                assert "\n" not in text.replace("\r\n", ""), "a line ending other than the base's CRLF"
            else:
                assert "\r" not in text, "a CRLF in a file of LF line endings"
        assert content.decode("utf-8").startswith(BOM) == self.original.decode("utf-8").startswith(BOM)
        # rolling every change back, one by one, forwards or backwards, gives the base back (but its version)
        for order in (list(self.active), list(reversed(self.active))):
            current, remaining = content, list(self.active)
            for change in order:
                remaining = [c for c in remaining if c.rule_id != change.rule_id]
                current = self.written(current, remaining)
            if json_file:
                assert same(current, self.original)
                assert version_of(current) >= version_of(content)
            else:
                assert current == self.original
        # a rolled-back rule's line is there only if the base or an active change provides it
        texts = [key(line.text) for line in held if line.is_rule]
        base_texts = [key(line.text) for line in self.base_lines if line.is_rule]
        for gone in self.rolled_back:
            if key(gone.new_rule) in texts:
                providers = base_texts + [key(c.new_rule) for c in self.active]
                assert key(gone.new_rule) in providers, f"{gone} is rolled back but its line is in the file"
        # no line twice unless it was twice in the base
        for text in set(texts):
            assert texts.count(text) <= max(1, base_texts.count(text)), f"{text!r} is in the file twice"


RuleFileMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRuleFileModel = RuleFileMachine.TestCase

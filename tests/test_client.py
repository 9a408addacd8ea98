"""The chatbot-side consumer (autotrain_client, re-exported as autotrain/client.py) on real rule files: stable
bucketing, canary entries, text files, and seeing a deploy (an atomic rename) without a restart."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

import autotrain_client.rules as client_rules
from autotrain.client import RuleBook, bucket, in_rollout

REPO_ROOT = Path(__file__).resolve().parent.parent
USERS = [f"user-{n}" for n in range(10_000)]
TOLERANCE = 1.5  # percentage points, as the "Done means" asks

JSON_FILE = "fashion_rules.json"
OLD_RULE = "- Luôn ưu tiên áo khoác/dày"
NEW_RULE = "- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày"
CANARY_ID = "RUL-2001"
ADDED_ALL = "- Hỏi ngân sách trước khi gợi ý sản phẩm giá cao"
ADDED_CANARY = "- Gợi ý thêm phụ kiện đi kèm khi khách chọn đầm"
ADDED_CANARY_ID = "RUL-2003"


def share(rule_id: str, percent: int) -> float:
    return 100 * sum(in_rollout(rule_id, user, percent) for user in USERS) / len(USERS)


def shipped_rules(rules_dir: Path) -> list[str]:
    return [entry["rule"] for entry in json.loads((rules_dir / JSON_FILE).read_text("utf-8"))["rules"]]


def write_atomically(path: Path, content: bytes | str, *, later_by: float = 10.0) -> None:
    """As the deployer writes: a temporary file in the same folder, then os.replace. The mtime is then moved
    later explicitly, since two writes can fall within one mtime tick."""
    before = path.stat().st_mtime if path.exists() else None
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp_name, path)
    if before is not None:
        os.utime(path, (before + later_by, before + later_by))


def json_file(entries: list[dict[str, Any]], version: int = 2) -> str:
    return json.dumps({"version": version, "rules": entries}, ensure_ascii=False, indent=2) + "\n"


def canary_file(rules_dir: Path, percent: int = 10) -> list[str]:
    """The shipped JSON file after a canary deploy that replaces OLD_RULE (the old entry stays, the new one
    carries rollout_percent and replaces), plus a 100 % entry and a canary that replaces nothing.
    Returns the lines in file order."""
    entries: list[dict[str, Any]] = [{"rule": line} for line in shipped_rules(rules_dir)]
    assert OLD_RULE in [entry["rule"] for entry in entries]
    entries.append({"rule": ADDED_ALL, "rule_id": "RUL-2002", "rollout_percent": 100, "added_from": "FB-2002"})
    entries.append(
        {
            "rule": NEW_RULE,
            "added_from": "FB-2001",
            "rule_id": CANARY_ID,
            "confidence": 0.85,
            "deployed_at": "2025-03-04T05:06:07+00:00",
            "rollout_percent": percent,
            "replaces": OLD_RULE,
        }
    )
    entries.append({"rule": ADDED_CANARY, "rule_id": ADDED_CANARY_ID, "rollout_percent": 50})
    write_atomically(rules_dir / JSON_FILE, json_file(entries))
    return [entry["rule"] for entry in entries]


# ---------------------------------------------------------------------- bucketing


def test_bucket_is_stable_within_and_across_processes() -> None:
    pairs = [("RUL-1001", "user-1"), ("RUL-1001", "user-2"), ("RUL-9", "Zalo:0912345678"), ("RUL-7", "khách-Đà-Nẵng")]
    here = [bucket(rule_id, user) for rule_id, user in pairs]
    assert here == [bucket(rule_id, user) for rule_id, user in pairs]
    assert all(0 <= value <= 99 for value in here)

    script = (
        "import json, sys\n"
        "from autotrain.client import bucket\n"
        "print(json.dumps([bucket(r, u) for r, u in json.loads(sys.argv[1])]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "random"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(pairs)], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == here


def test_bucket_is_the_documented_sha256() -> None:
    import hashlib

    digest = hashlib.sha256(b"RUL-1001:user-42").digest()
    assert bucket("RUL-1001", "user-42") == int.from_bytes(digest[:8], "big") % 100


@pytest.mark.parametrize("percent", [10, 25, 50])
@pytest.mark.parametrize("rule_id", ["RUL-1001", "RUL-2001", "RUL-77"])
def test_rollout_share_is_close_to_the_percentage(rule_id: str, percent: int) -> None:
    measured = share(rule_id, percent)
    assert abs(measured - percent) <= TOLERANCE, f"{rule_id} at {percent} %: {measured:.2f} %"


def test_rollout_edges() -> None:
    assert share("RUL-1001", 100) == 100
    assert share("RUL-1001", 0) == 0
    assert all(in_rollout("RUL-1", user, 100) for user in USERS[:100])
    # a user in a 10 % canary stays in it when the canary grows
    in_ten = {user for user in USERS if in_rollout("RUL-1", user, 10)}
    in_fifty = {user for user in USERS if in_rollout("RUL-1", user, 50)}
    assert in_ten < in_fifty


def test_different_rules_bucket_independently() -> None:
    first = {user for user in USERS if in_rollout("RUL-1001", user, 50)}
    second = {user for user in USERS if in_rollout("RUL-1002", user, 50)}
    overlap = 100 * len(first & second) / len(USERS)
    assert abs(overlap - 25) <= TOLERANCE, f"overlap {overlap:.2f} %"


# ---------------------------------------------------------------------- canaries in a JSON file


def test_canary_that_replaces_a_rule(rules_dir: Path) -> None:
    plain = shipped_rules(rules_dir)
    lines = canary_file(rules_dir, percent=10)
    book = RuleBook(rules_dir)
    inside = [user for user in USERS[:500] if in_rollout(CANARY_ID, user, 10)]
    outside = [user for user in USERS[:500] if not in_rollout(CANARY_ID, user, 10)]
    assert inside and outside

    for user in inside + outside:
        got = book.rules_for(JSON_FILE, user)
        in_canary = user in inside
        in_second = in_rollout(ADDED_CANARY_ID, user, 50)
        expected = [
            line
            for line in lines
            if not (line == OLD_RULE and in_canary)
            and not (line == NEW_RULE and not in_canary)
            and not (line == ADDED_CANARY and not in_second)
        ]
        assert got == expected  # file order kept
        assert (NEW_RULE in got) is in_canary
        assert (OLD_RULE in got) is not in_canary
        assert ADDED_ALL in got  # a 100 % entry is for everyone
        assert [line for line in got if line in plain] == [line for line in plain if line != OLD_RULE or not in_canary]

    # the user keeps the same variant on every call, and a second RuleBook (another process) agrees
    other = RuleBook(rules_dir)
    for user in inside[:20] + outside[:20]:
        assert other.rules_for(JSON_FILE, user) == book.rules_for(JSON_FILE, user)


def test_canary_share_of_users_seeing_the_new_rule(rules_dir: Path) -> None:
    canary_file(rules_dir, percent=10)
    book = RuleBook(rules_dir)
    results = [book.rules_for(JSON_FILE, user) for user in USERS]
    new_share = 100 * sum(NEW_RULE in got for got in results) / len(USERS)
    assert abs(new_share - 10) <= TOLERANCE
    assert all((NEW_RULE in got) != (OLD_RULE in got) for got in results)  # exactly one variant each


def test_all_rules_is_what_a_user_in_every_rollout_gets(rules_dir: Path) -> None:
    lines = canary_file(rules_dir, percent=10)
    book = RuleBook(rules_dir)
    assert book.all_rules(JSON_FILE) == [line for line in lines if line != OLD_RULE]


def test_promote_to_100_gives_everyone_the_new_rule(rules_dir: Path) -> None:
    canary_file(rules_dir, percent=10)
    book = RuleBook(rules_dir)
    assert any(OLD_RULE in book.rules_for(JSON_FILE, user) for user in USERS[:50])
    canary_file(rules_dir, percent=100)
    for user in USERS[:200]:
        got = book.rules_for(JSON_FILE, user)
        assert NEW_RULE in got and OLD_RULE not in got


def test_entry_without_rollout_is_for_everyone_and_shipped_file_is_unchanged(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    expected = shipped_rules(rules_dir)
    assert len(expected) == 6
    for user in USERS[:100]:
        assert book.rules_for(JSON_FILE, user) == expected
    assert book.all_rules(JSON_FILE) == expected


def test_canary_without_rule_id_buckets_on_its_line(rules_dir: Path) -> None:
    write_atomically(
        rules_dir / JSON_FILE, json_file([{"rule": "- a"}, {"rule": "- b", "rollout_percent": 30, "replaces": "- a"}])
    )
    book = RuleBook(rules_dir)
    for user in USERS[:200]:
        expected = ["- b"] if in_rollout("- b", user, 30) else ["- a"]
        assert book.rules_for(JSON_FILE, user) == expected


def test_malformed_rollout_percent_reaches_nobody(rules_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    entries = [{"rule": "- old"}, {"rule": "- new", "rule_id": "RUL-5", "rollout_percent": "ten", "replaces": "- old"}]
    write_atomically(rules_dir / JSON_FILE, json_file(entries))
    book = RuleBook(rules_dir)
    with caplog.at_level(logging.WARNING, logger="autotrain.client"):
        results = [book.rules_for(JSON_FILE, user) for user in USERS[:200]]
    assert all(got == ["- old"] for got in results)
    assert any("rollout_percent" in record.getMessage() for record in caplog.records)


# ---------------------------------------------------------------------- text and Markdown files


@pytest.mark.parametrize("module_name", ["prompt_v2.txt", "stylist_guidelines.md"])
def test_text_file_gives_every_rule_line_to_everyone(rules_dir: Path, module_name: str) -> None:
    text = (rules_dir / module_name).read_text("utf-8")
    expected = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(expected) >= 4
    book = RuleBook(rules_dir)
    for user in USERS[:200]:
        assert book.rules_for(module_name, user) == expected
    assert book.all_rules(module_name) == expected


# ---------------------------------------------------------------------- seeing a deploy without a restart


def test_sees_a_deploy_without_restart(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    before = book.rules_for(JSON_FILE, "user-1")
    assert before == shipped_rules(rules_dir)

    entries = [{"rule": line} for line in before] + [{"rule": ADDED_ALL, "rule_id": "RUL-3001"}]
    write_atomically(rules_dir / JSON_FILE, json_file(entries))
    assert book.rules_for(JSON_FILE, "user-1") == [*before, ADDED_ALL]

    # a text file too
    path = rules_dir / "prompt_v2.txt"
    old_lines = book.rules_for("prompt_v2.txt", "user-1")
    write_atomically(path, path.read_text("utf-8") + "- Luôn cảm ơn khách ở cuối câu trả lời\n")
    assert book.rules_for("prompt_v2.txt", "user-1") == [*old_lines, "- Luôn cảm ơn khách ở cuối câu trả lời"]


def test_same_size_rewrite_is_seen_when_the_mtime_moves(rules_dir: Path) -> None:
    path = rules_dir / "prompt_v2.txt"
    book = RuleBook(rules_dir)
    old_line = '- Xưng "mình", gọi khách là "bạn"; giọng thân thiện, lịch sự'
    new_line = '- Xưng "mình", gọi khách là "bạn"; giọng thân thiết, lịch sự'
    assert old_line in book.rules_for(path.name, "u")
    text = path.read_text("utf-8")
    changed = text.replace(old_line, new_line)
    assert len(changed.encode()) == len(text.encode())
    write_atomically(path, changed)
    got = book.rules_for(path.name, "u")
    assert new_line in got and old_line not in got


def test_unchanged_file_is_not_parsed_again(rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = client_rules.compile_rules

    def counting(module_name: str, content: bytes):
        calls.append(module_name)
        return real(module_name, content)

    monkeypatch.setattr(client_rules, "compile_rules", counting)
    book = RuleBook(rules_dir)
    for user in USERS[:100]:
        book.rules_for(JSON_FILE, user)
    assert calls == [JSON_FILE]
    write_atomically(rules_dir / JSON_FILE, json_file([{"rule": "- only"}]))
    assert book.rules_for(JSON_FILE, "user-1") == ["- only"]
    assert book.rules_for(JSON_FILE, "user-2") == ["- only"]
    assert calls == [JSON_FILE, JSON_FILE]


def test_corrupt_version_keeps_the_last_good_rules(rules_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    book = RuleBook(rules_dir)
    good = book.rules_for(JSON_FILE, "user-1")
    assert good == shipped_rules(rules_dir)

    with caplog.at_level(logging.WARNING, logger="autotrain.client"):
        write_atomically(rules_dir / JSON_FILE, '{"version": 3, "rules": [{"rule": "- half an edit"')
        assert book.rules_for(JSON_FILE, "user-1") == good
        assert book.rules_for(JSON_FILE, "user-2") == good
        assert book.all_rules(JSON_FILE) == good
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per bad version, not once per call
    assert JSON_FILE in warnings[0].getMessage() and "last good" in warnings[0].getMessage()

    # a wrong shape is as bad as broken JSON
    write_atomically(rules_dir / JSON_FILE, '{"version": 3, "rules": "- not a list"}')
    assert book.rules_for(JSON_FILE, "user-1") == good

    # the fixed file is read again
    write_atomically(rules_dir / JSON_FILE, json_file([{"rule": "- fixed"}], version=4))
    assert book.rules_for(JSON_FILE, "user-1") == ["- fixed"]


def test_corrupt_file_with_no_good_version_gives_no_rules(rules_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (rules_dir / JSON_FILE).write_text("not json", "utf-8")
    (rules_dir / "prompt_v2.txt").write_bytes(b"- a\n\xff\xfe\n")
    book = RuleBook(rules_dir)
    with caplog.at_level(logging.WARNING, logger="autotrain.client"):
        assert book.rules_for(JSON_FILE, "user-1") == []
        assert book.rules_for("prompt_v2.txt", "user-1") == []
    assert len(caplog.records) == 2


def test_missing_file_gives_no_rules_and_a_new_file_is_seen(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    assert book.rules_for("not_there.json", "user-1") == []
    assert book.all_rules("not_there.md") == []
    assert book.rules_for(JSON_FILE, "user-1") == shipped_rules(rules_dir)
    (rules_dir / JSON_FILE).unlink()
    assert book.rules_for(JSON_FILE, "user-1") == []
    (rules_dir / JSON_FILE).write_text(json_file([{"rule": "- back"}]), "utf-8")
    assert book.rules_for(JSON_FILE, "user-1") == ["- back"]
    assert RuleBook(tmp_missing := rules_dir / "no_such_folder").rules_for(JSON_FILE, "u") == []
    assert not tmp_missing.exists()


def test_readers_in_threads_see_one_whole_version_while_deploys_happen(rules_dir: Path) -> None:
    path = rules_dir / JSON_FILE
    versions = [[f"- rule {n}.{i}" for i in range(n % 5 + 1)] for n in range(40)]
    write_atomically(path, json_file([{"rule": line} for line in versions[0]]))
    book = RuleBook(rules_dir)
    allowed = {tuple(lines) for lines in versions}
    seen: list[tuple[str, ...]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(tuple(book.rules_for(JSON_FILE, "user-1")))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    for n, lines in enumerate(versions[1:], start=1):
        write_atomically(path, json_file([{"rule": line} for line in lines], version=n), later_by=n)
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors
    assert seen and set(seen) <= allowed
    assert book.rules_for(JSON_FILE, "user-1") == versions[-1]


# ---------------------------------------------------------------------- module names


@pytest.mark.parametrize(
    "module_name", ["../x", "../config/fashion_rules.json", "sub/x.json", "/etc/passwd", "..", ".", "", ".autotrain"]
)
def test_names_outside_the_folder_are_refused(rules_dir: Path, module_name: str) -> None:
    (rules_dir.parent / "x").write_text("- secret\n", "utf-8")
    book = RuleBook(rules_dir)
    with pytest.raises(ValueError):
        book.rules_for(module_name, "user-1")
    with pytest.raises(ValueError):
        book.all_rules(module_name)

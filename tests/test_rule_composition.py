"""Issue 11, "A rollback can destroy a rule for good": the sequences found black-box, through the service.

A rule file is its base plus its active changes (autotrain/ruleset.py): each of these must end with a file
that is derivable, whatever the order of the rollbacks."""

from __future__ import annotations

import json
from pathlib import Path

from autotrain.models import DeployOutcome, RuleStatus
from autotrain.service import PipelineService
from bot.slack.blocks import rule_card
from tests.conftest import ADMIN, OLD_WEATHER_RULE, REPORTER, WEATHER_FEEDBACK, read_rule_lines, submit

RULES = "fashion_rules.json"
LINE_A = "- Khi trời nóng: gợi ý áo thun cotton"
LINE_B = "- Khi trời nóng: gợi ý váy lanh mỏng"


async def rule_with(service: PipelineService, n: int, new_rule: str, old_rule: str | None = OLD_WEATHER_RULE):
    """An approved rule of fashion_rules.json replacing `old_rule` by `new_rule`."""
    feedback = await submit(service, {**WEATHER_FEEDBACK, "feedback_text": f"Góp ý số {n}: trời nóng mà áo khoác"})
    rule = await service.generate(feedback.feedback_id, REPORTER)
    await service.edit(rule.rule_id, ADMIN, new_rule=new_rule, module_name=RULES, old_rule=old_rule or "")
    return await service.approve(rule.rule_id, ADMIN)


def entries(rules_dir: Path) -> list[dict]:
    return json.loads((rules_dir / RULES).read_text(encoding="utf-8"))["rules"]


def without_version(rules_dir: Path) -> dict:
    data = json.loads((rules_dir / RULES).read_text(encoding="utf-8"))
    data.pop("version")
    return data


async def test_1_two_rules_replacing_one_line_rolled_back_in_either_order(
    service: PipelineService, rules_dir: Path
) -> None:
    original = without_version(rules_dir)
    for order in ("ab", "ba"):
        a = await rule_with(service, 1 if order == "ab" else 3, LINE_A)
        b = await rule_with(service, 2 if order == "ab" else 4, LINE_B)
        await service.deploy(a.rule_id, ADMIN)
        appended = await service.deploy(b.rule_id, ADMIN)
        assert appended.deployment.change["warning"] == "old_rule_not_found"
        first, second = (a, b) if order == "ab" else (b, a)
        await service.rollback(first.rule_id, ADMIN)
        await service.rollback(second.rule_id, ADMIN)
        assert read_rule_lines(rules_dir).count(OLD_WEATHER_RULE) == 1, order
        assert without_version(rules_dir) == original, order


async def test_2_canaries_and_full_deploys_on_one_line_give_it_back(service: PipelineService, rules_dir: Path) -> None:
    original = without_version(rules_dir)
    a = await rule_with(service, 1, LINE_A)
    b = await rule_with(service, 2, LINE_B)
    await service.deploy(a.rule_id, ADMIN, rollout_percent=10)
    await service.deploy(b.rule_id, ADMIN, rollout_percent=10)
    await service.promote(a.rule_id, ADMIN)
    await service.rollback(a.rule_id, ADMIN)
    assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)  # b's canary replaces it only for 10 %
    assert LINE_A not in read_rule_lines(rules_dir)
    await service.rollback(b.rule_id, ADMIN)
    assert without_version(rules_dir) == original

    c = await rule_with(service, 3, LINE_A)
    d = await rule_with(service, 4, LINE_B)
    await service.deploy(c.rule_id, ADMIN, rollout_percent=10)
    await service.deploy(d.rule_id, ADMIN)
    await service.rollback(c.rule_id, ADMIN)
    await service.rollback(d.rule_id, ADMIN)
    assert without_version(rules_dir) == original


async def test_3_a_chain_of_replaces_rolled_back_leaves_only_the_original(
    service: PipelineService, rules_dir: Path
) -> None:
    original = without_version(rules_dir)
    a = await rule_with(service, 1, LINE_A)
    await service.deploy(a.rule_id, ADMIN)
    b = await rule_with(service, 2, LINE_B, old_rule=LINE_A)
    await service.deploy(b.rule_id, ADMIN)
    await service.rollback(a.rule_id, ADMIN)
    lines = read_rule_lines(rules_dir)
    assert LINE_A not in lines  # a is rolled back: its line is nowhere
    # derived from what remains: b replaces a line that is not there, so it is added, and X is back
    assert LINE_B in lines and lines.count(OLD_WEATHER_RULE) == 1
    await service.rollback(b.rule_id, ADMIN)
    assert without_version(rules_dir) == original


async def test_4_a_full_deploy_of_a_canary_line_takes_it_to_every_user(
    service: PipelineService, rules_dir: Path
) -> None:
    original = without_version(rules_dir)
    a = await rule_with(service, 1, LINE_A)
    b = await rule_with(service, 2, LINE_A)
    await service.deploy(a.rule_id, ADMIN, rollout_percent=10)
    full = await service.deploy(b.rule_id, ADMIN)
    # the canary is promoted (its own deployment), and b rides on its line
    assert full.deployment.outcome is DeployOutcome.NOOP
    assert full.deployment.change["promoted_canaries"] == [a.rule_id]
    promoted = await service.get_rule(a.rule_id)
    assert promoted.rollout_percent == 100 and not promoted.canary  # the database says what the file does
    assert full.rule.rollout_percent == 100
    _, card = rule_card(full.rule, None, full.deployment, canary_percent=10)
    assert f"already a canary of {a.rule_id}: that canary now reaches every user" in str(card)
    [held] = [entry for entry in entries(rules_dir) if entry["rule"] == LINE_A]
    assert "rollout_percent" not in held  # what "rollout_percent: 100" says is what the file does
    assert OLD_WEATHER_RULE not in read_rule_lines(rules_dir)

    rolled = await service.rollback(a.rule_id, ADMIN)
    assert rolled.rule.status is RuleStatus.ROLLED_BACK
    [held] = [entry for entry in entries(rules_dir) if entry["rule"] == LINE_A]
    assert "rollout_percent" not in held and held["rule_id"] == b.rule_id  # no 10 % entry of a is left
    await service.rollback(b.rule_id, ADMIN)
    assert without_version(rules_dir) == original


async def test_a_hand_edit_is_adopted_and_the_model_starts_again_from_it(
    service: PipelineService, rules_dir: Path
) -> None:
    a = await rule_with(service, 1, LINE_A)
    await service.deploy(a.rule_id, ADMIN)
    path = rules_dir / RULES
    data = json.loads(path.read_text(encoding="utf-8"))
    data["rules"].append({"rule": "- Viết tay: một quy tắc thêm bằng tay"})
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    rolled = await service.rollback(a.rule_id, ADMIN)  # on the file as the human left it
    assert rolled.deployment.change["hand_edited"] is True
    _, card = rule_card(rolled.rule, None, rolled.deployment, canary_percent=10)
    assert "edited by hand since Auto-Train last changed it: the edit was kept" in str(card)
    lines = read_rule_lines(rules_dir)
    assert "- Viết tay: một quy tắc thêm bằng tay" in lines and LINE_A not in lines
    assert OLD_WEATHER_RULE in lines
    hand_made = path.read_bytes()
    b = await rule_with(service, 2, LINE_B)
    deployed = await service.deploy(b.rule_id, ADMIN)  # no change active: the hand-edited file is the new base
    assert "hand_edited" not in deployed.deployment.change
    await service.rollback(b.rule_id, ADMIN)
    assert json.loads(path.read_bytes())["rules"] == json.loads(hand_made)["rules"]


async def test_a_symlinked_rule_file_stays_a_link(service: PipelineService, rules_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / RULES
    target.parent.mkdir()
    (rules_dir / RULES).rename(target)
    (rules_dir / RULES).symlink_to(target)
    original = target.read_bytes()
    a = await rule_with(service, 1, LINE_A)
    await service.deploy(a.rule_id, ADMIN)
    assert (rules_dir / RULES).is_symlink() and LINE_A in target.read_text(encoding="utf-8")
    await service.rollback(a.rule_id, ADMIN)
    assert (rules_dir / RULES).is_symlink()
    assert json.loads(target.read_bytes())["rules"] == json.loads(original)["rules"]


# ---------------------------------------------------------------------- sequence 5: files as people leave them


async def test_5_a_line_present_twice_comes_back_twice(service: PipelineService, rules_dir: Path) -> None:
    path = rules_dir / RULES
    data = json.loads(path.read_text(encoding="utf-8"))
    data["rules"].append({"rule": OLD_WEATHER_RULE})  # a copy a person pasted in
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    before = read_rule_lines(rules_dir)
    assert before.count(OLD_WEATHER_RULE) == 2
    a = await rule_with(service, 1, LINE_A)
    await service.deploy(a.rule_id, ADMIN)
    after_deploy = read_rule_lines(rules_dir)
    assert LINE_A in after_deploy and after_deploy.count(LINE_A) == 1
    await service.rollback(a.rule_id, ADMIN)
    assert read_rule_lines(rules_dir) == before


async def test_5_a_byte_order_mark_before_the_first_rule(service: PipelineService, rules_dir: Path) -> None:
    path = rules_dir / RULES
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    before = without_version_bom(path)
    a = await rule_with(service, 1, LINE_A)
    await service.deploy(a.rule_id, ADMIN)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert LINE_A in [e["rule"] for e in without_version_bom(path)["rules"]]
    assert OLD_WEATHER_RULE not in [e["rule"] for e in without_version_bom(path)["rules"]]
    await service.rollback(a.rule_id, ADMIN)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert without_version_bom(path) == before


def without_version_bom(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    data.pop("version", None)
    return data


async def test_5_two_rules_on_one_line_of_a_text_file_give_the_file_back(
    service: PipelineService, rules_dir: Path
) -> None:
    """The same overlap as sequence 1, on a line-format file (every other line kept byte for byte)."""
    module = "prompt_v2.txt"
    path = rules_dir / module
    original = path.read_bytes()
    existing = next(line for line in original.decode("utf-8").splitlines() if line.startswith("- "))
    rules = []
    for n, line in enumerate((LINE_A, LINE_B), start=1):
        feedback = await submit(service, {**WEATHER_FEEDBACK, "feedback_text": f"Góp ý số {n}: trời nóng"})
        rule = await service.generate(feedback.feedback_id, REPORTER)
        await service.edit(rule.rule_id, ADMIN, new_rule=line, module_name=module, old_rule=existing)
        rules.append(await service.approve(rule.rule_id, ADMIN))
    for rule in rules:
        await service.deploy(rule.rule_id, ADMIN)
    lines = read_rule_lines(rules_dir, module)
    assert existing not in lines and LINE_A in lines and LINE_B in lines
    await service.rollback(rules[0].rule_id, ADMIN)
    await service.rollback(rules[1].rule_id, ADMIN)
    assert path.read_bytes() == original


async def test_kept_bases_no_active_change_derives_from_are_pruned_at_start(
    service: PipelineService, rules_dir: Path
) -> None:
    bases = rules_dir / ".autotrain" / "bases" / RULES
    a = await rule_with(service, 1, LINE_A)
    await service.deploy(a.rule_id, ADMIN)
    await service.rollback(a.rule_id, ADMIN)
    b = await rule_with(service, 2, LINE_B)
    await service.deploy(b.rule_id, ADMIN)  # its base is the file after a's rollback (another version)
    assert len(list(bases.glob("*.base"))) == 2
    await service.reconcile()
    [kept] = bases.glob("*.base")
    await service.rollback(b.rule_id, ADMIN)  # still derivable from the kept base
    assert OLD_WEATHER_RULE in read_rule_lines(rules_dir)
    await service.reconcile()
    assert list(bases.glob("*.base")) == []
    assert kept.name.endswith(".base")

"""Both message catalogues are complete: every message the code marks is in Vietnamese and in English, with
the same placeholders; and the catalogues are what the code reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autotrain.i18n import Language, _, catalogue, language_of, ngettext, number, percent, speaking

ROOT = Path(__file__).resolve().parent.parent


def test_every_marked_message_is_translated_in_both_catalogues() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/catalogues.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_catalogues_are_read_and_merged() -> None:
    vi = catalogue(Language.VI)
    assert vi.gettext("approved") != "approved"
    with speaking(Language.VI):
        assert _("{rule_id} is already approved", rule_id="RUL-1001").startswith("RUL-1001")
        assert _("{rule_id} is already approved", rule_id="RUL-1001") != "RUL-1001 is already approved"
    with speaking(Language.EN):
        assert _("{rule_id} is already approved", rule_id="RUL-1001") == "RUL-1001 is already approved"


def test_numbers_and_locales() -> None:
    with speaking(Language.VI):
        assert number(12345) == "12.345"
    with speaking(Language.EN):
        assert number(12345) == "12,345"
        assert percent(0.4) == "40%"
        assert ngettext("{n} rule", "{n} rules", 1) == "1 rule"
        assert ngettext("{n} rule", "{n} rules", 3) == "3 rules"
    assert language_of("vi-VN", Language.EN) is Language.VI
    assert language_of("en_GB", Language.VI) is Language.EN
    assert language_of("fr-FR", Language.VI) is Language.VI
    assert language_of(None, Language.EN) is Language.EN

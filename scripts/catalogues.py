"""Keep the message catalogues in step with the code.

    python scripts/catalogues.py               # add new messages to autotrain/locale/*/LC_MESSAGES/<area>.po
    python scripts/catalogues.py --area slack  # only that area's files
    python scripts/catalogues.py --check       # exit 1 if a message is missing or untranslated (the test's check)

Messages are what the code marks with `_()`, `N_()` and `ngettext()` (Babel's extractor). A new message goes
into its area's file (by the file that marks it) in both languages: in English its text, in Vietnamese empty,
to be translated by hand. Messages no longer in the code are dropped.
"""

from __future__ import annotations

import string
import sys
from collections import defaultdict
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "autotrain" / "locale"
LANGUAGES = ("vi", "en")
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
SOURCES = ("autotrain", "bot")


def area_of(path: str) -> str:
    """Which catalogue file a message marked in `path` (relative to the repository) belongs to."""
    if path.startswith(("bot/slack/monitoring", "autotrain/monitoring")):
        return "monitoring"
    if path.startswith("bot/slack/"):
        return "slack"
    if path.startswith("bot/cli"):
        return "cli"
    if path.startswith("autotrain/generators/"):
        return "generator"
    if path in PIPELINE:
        return "pipeline"
    return "core"


# deploys, lookups, generation and rule files: what the pipeline refuses along the way
PIPELINE = {
    "autotrain/usecases/deploys.py",
    "autotrain/usecases/lookup.py",
    "autotrain/usecases/generation.py",
    "autotrain/rulefiles.py",
}


Message = tuple[str, str | None]  # (msgid, plural msgid)


def extracted() -> dict[str, dict[Message, list[tuple[str, int]]]]:
    """area → message → where it is marked."""
    found: dict[str, dict[Message, list[tuple[str, int]]]] = defaultdict(dict)
    for source in SOURCES:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            ROOT / source, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            path = f"{source}/{filename}"
            if isinstance(message, tuple):
                key: Message = (message[0], message[1])
            else:
                key = (message, None)
            if not key[0]:
                continue
            found[area_of(path)].setdefault(key, []).append((path, lineno))
    return found


def load(language: str, area: str) -> Catalog:
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{area}.po"
    if not path.exists():
        return Catalog(locale=language, project="autotrain", domain=area)
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


def placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError:  # not a format string (an unmatched brace): compared as having none
        return set()


def problems() -> list[str]:
    """What `--check` reports: each message missing from a catalogue or not translated."""
    found: list[str] = []
    for area, messages in extracted().items():
        for language in LANGUAGES:
            catalog = load(language, area)
            for (msgid, plural), places in messages.items():
                entry = catalog.get(msgid)
                where = f"{places[0][0]}:{places[0][1]}"
                if entry is None:
                    found.append(f"{language}/{area}.po: missing {msgid!r} ({where})")
                    continue
                strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
                if not all(strings):
                    found.append(f"{language}/{area}.po: untranslated {msgid!r} ({where})")
                    continue
                wanted = placeholders(msgid) | (placeholders(plural) if plural else set())
                for text in strings:
                    if placeholders(text) - wanted - {"n"} or (not plural and placeholders(text) != wanted):
                        found.append(f"{language}/{area}.po: placeholders of {msgid!r} differ in {text!r} ({where})")
    return found


def update(areas: set[str] | None = None) -> None:
    for area, messages in extracted().items():
        if areas and area not in areas:
            continue
        for language in LANGUAGES:
            old = load(language, area)
            new = Catalog(locale=language, project="autotrain", domain=area, creation_date=old.creation_date)
            for (msgid, plural), places in sorted(messages.items(), key=lambda item: item[1][0]):
                previous = old.get(msgid)
                key = (msgid, plural) if plural else msgid
                if previous is not None and previous.string:
                    string = previous.string
                elif language == "en":
                    string = (msgid, plural) if plural else msgid
                else:
                    string = ("", "") if plural else ""
                if plural and not isinstance(string, tuple):
                    string = (string, string)
                if not plural and isinstance(string, tuple):
                    string = string[0]
                new.add(key, string, locations=places[:3])
            path = LOCALE_DIR / language / "LC_MESSAGES" / f"{area}.po"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                write_po(handle, new, width=120, omit_header=False, sort_output=False, include_lineno=False)


def main() -> int:
    areas = {sys.argv[i + 1] for i, arg in enumerate(sys.argv[:-1]) if arg == "--area"}
    if "--check" not in sys.argv:
        update(areas or None)
    found = problems()
    for line in found:
        print(line)
    return 1 if found and "--check" in sys.argv else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Messages in the reader's language: gettext catalogues, Babel for numbers and dates.

The catalogues are `autotrain/locale/<language>/LC_MESSAGES/*.po`, one file per area (slack, core, cli,
generator, monitoring); every file of a language is read and merged into one gettext catalogue when first
used, so no compile step is needed. The English source text is the msgid; `tests/test_catalogues.py` checks
that every message marked in the code is in both catalogues, translated, with the same placeholders.

Which language a message is written in is the *current* language, a context variable: a Slack listener sets
it from the user's locale (`speaking(...)`), anything else speaks `AUTOTRAIN_LANGUAGE`. A message is marked
with `_()` where it is shown, or with `N_()` where it is defined and translated later (errors, enums).
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent

LOCALE_DIR = Path(__file__).parent / "locale"


class Language(StrEnum):
    VI = "vi"
    EN = "en"


_current: ContextVar[Language | None] = ContextVar("autotrain_language", default=None)
_default = Language.EN  # AUTOTRAIN_LANGUAGE, for whatever runs outside a `speaking` block


def N_(message: str) -> str:
    """Marks `message` for the catalogues where it is defined; `_()` translates it where it is shown."""
    return message


def current_language() -> Language:
    return _current.get() or _default


@contextmanager
def speaking(language: Language) -> Iterator[Language]:
    """Messages built inside the block are in `language`."""
    token = _current.set(language)
    try:
        yield language
    finally:
        _current.reset(token)


def set_default_language(language: Language) -> None:
    """The language of everything outside a `speaking` block (`AUTOTRAIN_LANGUAGE`, set at start-up)."""
    global _default
    _default = language


def language_of(locale: str | None, default: Language) -> Language:
    """Slack's `vi-VN`, `en-US`, `en_GB`, … → a language we have; anything else → `default`."""
    if not locale:
        return default
    code = locale.replace("_", "-").split("-")[0].lower()
    try:
        return Language(code)
    except ValueError:
        return default


@cache
def catalogue(language: Language) -> gettext.GNUTranslations:
    """All `.po` files of `language`, merged and compiled in memory."""
    merged = None
    for path in sorted((LOCALE_DIR / language.value / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            part = read_po(handle, locale=language.value)
        if merged is None:
            merged = part
            continue
        for message in part:
            if message.id:
                merged[message.id] = message
    if merged is None:
        return gettext.GNUTranslations(io.BytesIO(_empty_mo(language)))
    buffer = io.BytesIO()
    write_mo(buffer, merged, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def _empty_mo(language: Language) -> bytes:
    from babel.messages.catalog import Catalog

    buffer = io.BytesIO()
    write_mo(buffer, Catalog(locale=language.value))
    return buffer.getvalue()


def _(message: str, /, **params: Any) -> str:
    """`message` in the current language; `{name}` placeholders filled from `params` (only when given)."""
    text = catalogue(current_language()).gettext(message)
    return text.format(**params) if params else text


def ngettext(singular: str, plural: str, n: int, /, **params: Any) -> str:
    """The form for `n` in the current language (Vietnamese has one); `{n}` is filled in, with `params`."""
    text = catalogue(current_language()).ngettext(singular, plural, n)
    return text.format(n=number(n), **params)


def translated(message: str, params: dict[str, Any]) -> str:
    """A message defined elsewhere (an error, `N_`) with its parameters, in the current language; a parameter
    that is itself a marked word (a status, an enum value) is translated too."""
    values = {key: _(value) if isinstance(value, StrEnum) else value for key, value in params.items()}
    text = catalogue(current_language()).gettext(message)
    try:
        return text.format(**values) if values else text
    except (KeyError, IndexError, ValueError):  # a catalogue typo must never hide the message itself
        return message.format(**params) if params else message


def _locale() -> Locale:
    return Locale.parse(current_language().value)


def number(value: float) -> str:
    """1,234 in English, 1.234 in Vietnamese."""
    return format_decimal(value, locale=_locale())


def percent(value: float) -> str:
    """A share (0.4) as a percentage, rounded to a whole number: 40% / 40 %."""
    return format_percent(value, format="#,##0%", locale=_locale())


def moment(value: datetime) -> str:
    """A date and time in the reader's usual form (UTC)."""
    return format_datetime(value, "short", tzinfo=None, locale=_locale()) + " UTC"

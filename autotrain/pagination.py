"""Lists page by keyset: a cursor names the last item seen, so a deep page costs what the first does, and no
item is skipped or repeated while new ones arrive. Newest first unless asked otherwise (what people browsing
feedback expect); `offset` still works, up to MAX_OFFSET, for callers from before cursors."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum

from autotrain.errors import InvalidInput

MAX_OFFSET = 10_000


class Order(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after the item at `position` (its row number), in `order`."""

    position: int
    order: Order

    def encode(self) -> str:
        text = f"{'n' if self.order is Order.NEWEST else 'o'}{self.position}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raw = ""
        if len(raw) < 2 or raw[0] not in "no" or not raw[1:].isdigit() or len(raw) > 20:
            raise InvalidInput(f"cursor {text[:40]!r} is not one this API gave out; pass next_cursor back unchanged")
        return cls(int(raw[1:]), Order.NEWEST if raw[0] == "n" else Order.OLDEST)


def page_request(*, cursor: str | None, offset: int, order: Order | None) -> tuple[Cursor | None, Order]:
    """The cursor and order a list call asks for; InvalidInput for a cursor beside an offset, a cursor of
    another order, or an offset past MAX_OFFSET."""
    if offset > MAX_OFFSET:
        raise InvalidInput(f"offset may be at most {MAX_OFFSET:,}; page further with cursor (next_cursor)")
    if cursor is None:
        return None, order or Order.NEWEST
    if offset:
        raise InvalidInput("give either cursor or offset, not both")
    decoded = Cursor.decode(cursor)
    if order is not None and order is not decoded.order:
        raise InvalidInput(f"this cursor pages {decoded.order.value} first; drop order or pass order={decoded.order}")
    return decoded, decoded.order

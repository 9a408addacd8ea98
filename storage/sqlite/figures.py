"""The maintained figures (migration 14): counters the triggers keep in the transaction of every change, read
in one query instead of counting rows (their sums: storage/figures.py)."""

from __future__ import annotations

import aiosqlite

from storage.figures import Figures


async def figures(db: aiosqlite.Connection, prefix: str = "") -> Figures:
    """Every maintained figure (a few dozen rows), or those whose name starts with `prefix`."""
    if prefix:
        cursor = await db.execute(
            "SELECT name, n FROM figures WHERE name >= ? AND name < ?", (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        )
    else:
        cursor = await db.execute("SELECT name, n FROM figures")
    return Figures.of({row[0]: int(row[1]) for row in await cursor.fetchall()})


async def feedback_total(db: aiosqlite.Connection) -> int:
    return (await figures(db, "feedback|")).feedback()

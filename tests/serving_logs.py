"""Reading the log of `autotrain serve`: which lines are warnings, errors or tracebacks (ours are
"<time> LEVEL logger: message", uvicorn's own "LEVEL:     message")."""

from __future__ import annotations

import re

_PROBLEM = re.compile(r"^(?:\S+ \S+ )?(WARNING|ERROR|CRITICAL)\b|^Traceback|^(WARNING|ERROR|CRITICAL):")


def problems_in(log: str) -> list[str]:
    """The lines of `log` at WARNING or above, and the first line of every traceback."""
    return [line for line in log.splitlines() if _PROBLEM.match(line)]


def info_lines(log: str, logger: str) -> list[str]:
    """The messages `logger` logged at INFO, in order."""
    prefix = f" INFO {logger}: "
    return [line.split(prefix, 1)[1] for line in log.splitlines() if prefix in line]

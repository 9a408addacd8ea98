"""Slow clients cannot exhaust `autotrain serve` (issue 11): a read timeout for a request's headers, a cap on
open connections, and an open-file limit that fits the cap.

uvicorn (h11) has no timeout while it reads headers (its keep-alive timer starts only after a response), and
its `limit_concurrency` answers 503 only once headers are complete, so clients that send one byte at a time
hold their file descriptors for ever. `LimitedH11Protocol` adds:

- a read timer, started when a connection opens and again after each response, stopped when a request's
  headers are complete: when it runs out, a client that had started a request is answered 408 and the
  connection closed (an idle keep-alive connection is just closed). The body's own deadline is in
  `bot/api.py` (`BodySizeLimit`), where the app reads it;
- at most `max_connections` open connections: a new one over the cap closes the oldest connection that is
  still sending headers or a body (or idles between requests), so a quick `/healthz` always gets in. One whose
  request is complete and being answered is never closed for another.

The listen backlog is also asyncio's accept batch (it accepts up to that many sockets per wake-up, before any
is capped): `BACKLOG` keeps that batch small, and `RESERVED_FDS` leaves room for it besides the database, the
log and outgoing connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("autotrain.http")

BACKLOG = 64
RESERVED_FDS = 3 * BACKLOG + 64


class ConnectionLimits:
    """The connections of one server: all open ones, and, oldest first, those still sending a request."""

    def __init__(self, read_timeout: float, max_connections: int) -> None:
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.open: set[LimitedH11Protocol] = set()
        self.reading: dict[LimitedH11Protocol, None] = {}  # insertion-ordered: the oldest first
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def opened(self, connection: LimitedH11Protocol) -> bool:
        """Count a new connection; close the oldest reading one while over the cap. False: nothing could be
        closed for it (every other connection is being answered), so it is refused."""
        self.open.add(connection)
        while len(self.open) > self.max_connections:
            victim = next((c for c in self.reading if c is not connection), None)
            if victim is None:
                self.refused += 1
                self.closed(connection)
                return False
            self.evicted += 1
            self.closed(victim)
            victim.transport.abort()
        return True

    def closed(self, connection: LimitedH11Protocol) -> None:
        self.open.discard(connection)
        self.reading.pop(connection, None)

    def set_reading(self, connection: LimitedH11Protocol, reading: bool) -> None:
        if not reading:
            self.reading.pop(connection, None)
        elif connection in self.open and connection not in self.reading:
            self.reading[connection] = None


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read timer and a connection cap (`limits`, set by `limited_protocol`)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.limits.opened(self):
            transport.write(_raw_response(503, "Service Unavailable", "too_many_connections", "try again later"))
            transport.close()
            return
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        self.limits.closed(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def shutdown(self) -> None:
        """Server stopping: a connection still sending its request is closed now (its request has not begun),
        rather than holding the shutdown up until its read timeout."""
        if self in self.limits.reading:
            self.limits.closed(self)
            self.transport.close()
            return
        super().shutdown()

    def _track(self) -> None:
        """Awaiting a request (none yet, or the last one answered): the read timer runs. A request whose body
        is still arriving: still reading (the body's deadline is the app's). Otherwise: being answered."""
        if self.transport is None or self.transport.is_closing():
            self._stop_read_timer()
            self.limits.closed(self)
            return
        awaiting = self.cycle is None or self.cycle.response_complete
        if awaiting:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)
            self.limits.set_reading(self, True)
        else:
            self._stop_read_timer()
            self.limits.set_reading(self, self.conn.their_state is h11.SEND_BODY)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        self.limits.timed_out += 1
        started = self.conn.their_state is not h11.IDLE or bool(self.conn.trailing_data[0])
        if started:
            seconds = f"{self.limits.read_timeout:g}"
            message = f"the request did not arrive within {seconds} s"
            self.transport.write(_raw_response(408, "Request Timeout", "request_timeout", message))
        self.limits.closed(self)
        self.transport.close()


def limited_protocol(read_timeout: float, max_connections: int) -> type[LimitedH11Protocol]:
    """A protocol class for `uvicorn.Config(http=...)`, with its own `ConnectionLimits`."""
    limits = ConnectionLimits(read_timeout, max_connections)
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": limits})


def fit_open_file_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to what `max_connections` needs, as far as the hard limit allows; if it
    stays short, return a lower cap (and log a warning). Returns the cap to use."""
    needed = max_connections + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-file limit raised from %d to %d for %d connections", soft, target, max_connections)
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft >= needed:
        return max_connections
    cap = max(soft - RESERVED_FDS, soft // 4, 1)
    log.warning(
        "open-file limit %d (hard %s) is too low for AUTOTRAIN_MAX_CONNECTIONS=%d: at most %d connections "
        "(raise `ulimit -n` to %d)",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        max_connections,
        cap,
        needed,
    )
    return cap

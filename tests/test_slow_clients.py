"""Slow clients against `autotrain serve` (issue 11): hundreds of raw sockets that send a request a byte at a
time cannot hold the server's file descriptors, keep /healthz from answering, or flood its log."""

from __future__ import annotations

import logging
import selectors
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve_process import serving, subprocess_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
SLOW_HEADERS = b"POST /autotrain/feedback HTTP/1.1\r\nHost: autotrain\r\nContent-Type: application/json\r\nX-Slow: "
SLOW_BODY = (
    b"POST /autotrain/feedback HTTP/1.1\r\nHost: autotrain\r\nContent-Type: application/json\r\n"
    b"Content-Length: 60000\r\n\r\n{"
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    shutil.copytree(REPO_ROOT / "config", folder / "config", ignore=shutil.ignore_patterns(".autotrain"))
    return folder


@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    clients: list[socket.socket] = []
    yield clients
    for sock in clients:
        sock.close()


def open_slow(base_url: str, first_bytes: bytes) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(first_bytes)
    sock.setblocking(False)
    return sock


def watch(clients: list[socket.socket], seconds: float, trickle_every: float = 0.25) -> dict[int, tuple[bytes, float]]:
    """Read every client for up to `seconds`, sending each still-open one one more byte every `trickle_every`
    seconds. Returns, per client index, what the server sent and when the server closed it (inf: never)."""
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    received = {i: bytearray() for i in range(len(clients))}
    closed_at = {i: float("inf") for i in range(len(clients))}
    for i, sock in enumerate(clients):
        selector.register(sock, selectors.EVENT_READ, i)
    next_trickle = start + trickle_every
    while selector.get_map() and time.monotonic() - start < seconds:
        for key, _ in selector.select(timeout=0.05):
            i = key.data
            try:
                data = clients[i].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                received[i] += data
            else:
                closed_at[i] = time.monotonic() - start
                selector.unregister(clients[i])
        if time.monotonic() >= next_trickle:
            next_trickle += trickle_every
            for key in list(selector.get_map().values()):
                try:
                    clients[key.data].send(b"x")
                except OSError:
                    pass
    selector.close()
    return {i: (bytes(received[i]), closed_at[i]) for i in received}


def test_healthz_answers_while_600_slow_clients_connect_to_a_server_with_384_open_files(
    workdir: Path, slow_clients: list[socket.socket]
) -> None:
    # a long read timeout: only the connection cap (lowered to fit the open-file limit) keeps the server alive
    env = subprocess_environment(AUTOTRAIN_READ_TIMEOUT_SECONDS="60", AUTOTRAIN_SCHEDULER="false")
    with serving(workdir, env, open_files=384) as (base_url, _process):
        answered: list[float] = []
        with httpx.Client(timeout=3) as client:
            for round_ in range(6):
                for i in range(100):
                    slow_clients.append(open_slow(base_url, SLOW_HEADERS if (i + round_) % 2 else SLOW_BODY))
                started = time.monotonic()
                response = client.get(f"{base_url}/healthz", headers={"Connection": "close"})
                answered.append(time.monotonic() - started)
                assert response.status_code == 200
        assert len(slow_clients) == 600
        assert max(answered) < 2, answered
        log = (workdir / "serve.log").read_text(errors="replace")
    assert "at most 128 connections" in log  # 384 open files: the default cap of 500 lowered, with a warning
    assert "Too many open files" not in log
    assert len(log.encode()) < 20_000


def test_slow_headers_are_answered_408_and_closed_within_the_read_timeout(
    workdir: Path, slow_clients: list[socket.socket]
) -> None:
    env = subprocess_environment(AUTOTRAIN_READ_TIMEOUT_SECONDS="1", AUTOTRAIN_SCHEDULER="false")
    with serving(workdir, env, open_files=1024) as (base_url, _process):
        slow_clients.extend(open_slow(base_url, SLOW_HEADERS) for _ in range(200))
        outcome = watch(slow_clients, seconds=6)  # a header byte every 0.25 s does not extend the timeout
        assert httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    closed = sorted(at for _, at in outcome.values())
    assert closed[-1] < 3.5, closed[-5:]  # 1 s, and the time to open 200 sockets and schedule on 2 cores
    statuses = {data.split(b"\r\n", 1)[0] for data, _ in outcome.values()}
    assert statuses == {b"HTTP/1.1 408 Request Timeout"}
    assert all(b'"code": "request_timeout"' in data for data, _ in outcome.values())


def test_slow_bodies_are_answered_408_with_connection_close_within_the_read_timeout(
    workdir: Path, slow_clients: list[socket.socket]
) -> None:
    env = subprocess_environment(AUTOTRAIN_READ_TIMEOUT_SECONDS="1", AUTOTRAIN_SCHEDULER="false")
    with serving(workdir, env, open_files=1024) as (base_url, _process):
        slow_clients.extend(open_slow(base_url, SLOW_BODY) for _ in range(200))
        outcome = watch(slow_clients, seconds=6)  # a body byte every 0.25 s: 60,000 bytes would take 4 hours
        assert httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
        log_size = (workdir / "serve.log").stat().st_size
    closed = sorted(at for _, at in outcome.values())
    assert closed[-1] < 3.5, closed[-5:]
    for data, _ in outcome.values():
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"\r\nconnection: close" in head.lower()
        assert b'"code":"request_timeout"' in body
    assert log_size < 60_000  # one access-log line per request, nothing else


def test_a_repeated_log_message_is_logged_a_few_times_then_summarised() -> None:
    from bot.log_limits import RepeatedMessageFilter

    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("tests.slow_clients.flood")
    logger.propagate = False
    logger.addHandler(Collect())
    logger.addFilter(RepeatedMessageFilter(burst=3, interval=10, clock=lambda: now[0]))
    for _ in range(10_000):
        logger.error("socket.accept() out of system resource")
    logger.error("something else")
    now[0] = 11
    logger.error("socket.accept() out of system resource")
    assert records == [
        "socket.accept() out of system resource",
        "socket.accept() out of system resource",
        "socket.accept() out of system resource [repeated 3 times: more like this are counted, not logged]",
        "something else",
        "socket.accept() out of system resource [9997 more like this in the last 11 s not logged]",
    ]

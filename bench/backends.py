"""SQLite and PostgreSQL side by side, in one run: ingestion against /healthz, status at a million rows, deploy.

    .venv/bin/python bench/backends.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/backends.py --postgres URL --db /tmp/autotrain-1m.db   # reuse bench/scale.py's database

`--postgres` names a server; the benchmark makes its own databases there (`autotrain_bench_*`) and drops them.

1. Ingestion: one `autotrain serve` per backend on an empty database, auto-generate off; wrk (one thread, 16
   connections, 8 s: --connections, --duration) on /healthz, then POSTing feedback (bench/ingest.py's script
   and bodies). Prints req/s and the ratio feedback / healthz of each backend.
2. Status at a million rows: bench/scale.py's database (1M feedbacks / 200k rules, built once, or --db), served
   as a copy on SQLite and copied row for row into PostgreSQL (COPY; triggers off while loading, the figures
   copied as they are, the identities moved past the largest id). GET /autotrain/status five times on each:
   best and median.
3. Deploy: on the same two servers, three rules of the 10,000-rule file (bench/scale.py's), each approved then
   deployed (POST /deploy, git on): best and median latency.

The last column is PostgreSQL ÷ SQLite (below 1: PostgreSQL is faster). Both servers run on this machine:
PostgreSQL's client-server round trips are loopback, with `synchronous_commit` as the server has it.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autotrain.policy import Role
from bench.ingest import Driver, feedback_bodies, first_complaint, first_submission, lua_script, server_env
from bench.scale import Built, add_deploy_rules, database, prepare_server, repeat
from bot.auth import mint_token
from storage.postgres import PostgresStore
from tests.serve_process import REPO_ROOT, serving


def with_database(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextmanager
def postgres_database(server_url: str):
    """A new database on the server, its URL; dropped after."""
    name = f"autotrain_bench_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(sql)
        finally:
            await admin.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---------------------------------------------------------------------- SQLite → PostgreSQL, row for row


async def copy_into_postgres(sqlite_path: Path, url: str) -> float:
    """Every row of the SQLite database into PostgreSQL's schema (made by opening a store); seconds taken."""
    started = time.perf_counter()
    store = PostgresStore(url)
    await store.open()  # the schema
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        types = {
            (row["table_name"], row["column_name"]): row["data_type"]
            for row in await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            )
        }
        tables = sorted({table for table, _ in types} - {"schema_version"})
        await conn.execute(f"TRUNCATE {', '.join(tables)}")  # the rows the schema seeds come from SQLite too
        await conn.execute("SET session_replication_role = replica")  # no triggers: the figures are copied
        with closing(sqlite3.connect(sqlite_path)) as source:
            for table in tables:
                columns = [c for (t, c) in types if t == table]
                present = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
                columns = [c for c in columns if c in present]
                if not columns:  # a table SQLite does not have (PostgreSQL's own): nothing to copy
                    continue
                stamps = {c for c in columns if types[(table, c)].startswith("timestamp")}
                cursor = source.execute(f"SELECT {', '.join(columns)} FROM {table}")
                while batch := cursor.fetchmany(50_000):
                    records = [
                        tuple(
                            datetime.fromisoformat(v) if c in stamps and isinstance(v, str) else v
                            for c, v in zip(columns, row, strict=True)
                        )
                        for row in batch
                    ]
                    await conn.copy_records_to_table(table, records=records, columns=columns)
        for table in tables:
            if ("id" in {c for (t, c) in types if t == table}) and await conn.fetchval(
                "SELECT pg_get_serial_sequence($1, 'id')", table
            ):
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)"
                    f" FROM {table}"
                )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------------- the measurements


def ingestion(folder: Path, database_url: str | None, connections: int, seconds: int) -> tuple[float, float]:
    """(healthz req/s, feedback req/s) of one server on an empty database."""
    workdir = folder / f"ingest-{'postgres' if database_url else 'sqlite'}"
    workdir.mkdir()
    shutil.copytree(REPO_ROOT / "config", workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    secret = secrets.token_urlsafe(48)
    token = mint_token(secret, subject="bench-chatbot", role=Role.REPORTER)
    bodies = feedback_bodies()
    script = lua_script(workdir / "post_feedback.lua", token, bodies)
    env = server_env(workdir, secret, auto_generate=False, database_url=database_url)
    with serving(workdir, env, log_level="warning") as (url, _):
        driver = Driver(url, connections, token, bodies, script)
        driver.healthz(1)
        first_submission(url, token, first_complaint(bodies))
        healthz, feedback = driver.healthz(seconds), driver.feedback(seconds)
    return healthz.rps, feedback.rps


def status_and_deploy(built: Built, folder: Path, database_url: str | None) -> tuple[list[float], list[float]]:
    """(status latencies, deploy latencies) in ms, on a copy of the 1M database."""
    name = "postgres" if database_url else "sqlite"
    workdir = folder / f"served-{name}"
    workdir.mkdir()
    server = prepare_server(built, workdir, git=True)
    rule_ids = add_deploy_rules(server.db)
    env = dict(server.env)
    if database_url:
        seconds = asyncio.run(copy_into_postgres(server.db, database_url))
        print(f"  copied {server.db.name} into PostgreSQL in {seconds:.0f} s")
        env["AUTOTRAIN_DATABASE_URL"] = database_url
    admin = {"Authorization": f"Bearer {server.token()}"}
    with serving(workdir, env, log_level="warning", startup_seconds=120) as (url, _):
        with httpx.Client(base_url=url, headers=admin, timeout=300) as http:
            http.get("/autotrain/status").raise_for_status()  # what the first call loads stays out
            status = repeat(lambda: http.get("/autotrain/status").raise_for_status()).samples
            deploys = []
            for rule_id in rule_ids:
                http.post(f"/autotrain/rules/{rule_id}/approve").raise_for_status()
                started = time.perf_counter()
                http.post(f"/autotrain/rules/{rule_id}/deploy").raise_for_status()
                deploys.append((time.perf_counter() - started) * 1000)
    return status, deploys


def row(what: str, sqlite: str, postgres: str, ratio: float | None) -> None:
    print(f"| {what} | {sqlite} | {postgres} | {f'{ratio:.2f}×' if ratio is not None else ''} |")


def ms(samples: list[float]) -> str:
    return f"{min(samples):,.1f} / {statistics.median(samples):,.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server URL (databases are made there)")
    parser.add_argument("--db", help="bench/scale.py's SQLite database (built there first if missing)")
    parser.add_argument("--feedbacks", type=int, default=1_000_000)
    parser.add_argument("--rules", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autotrain-backends-") as tmp:
        folder = Path(tmp)
        print("1. ingestion (wrk, empty databases)")
        sqlite_ingest = ingestion(folder, None, args.connections, args.duration)
        with postgres_database(args.postgres) as url:
            postgres_ingest = ingestion(folder, url, args.connections, args.duration)
        print("2, 3. status and deploy at a million rows")
        built = database(args.db, args.feedbacks, args.rules, folder)
        sqlite_status, sqlite_deploy = status_and_deploy(built, folder, None)
        with postgres_database(args.postgres) as url:
            postgres_status, postgres_deploy = status_and_deploy(built, folder, url)
    print()
    print("| | SQLite | PostgreSQL | PostgreSQL ÷ SQLite |")
    print("|---|---|---|---|")
    for label, index in (("/healthz req/s", 0), ("POST /feedback req/s", 1)):
        s, p = sqlite_ingest[index], postgres_ingest[index]
        row(label, f"{s:,.0f}", f"{p:,.0f}", p / s)
    row(
        "feedback ÷ healthz",
        f"{sqlite_ingest[1] / sqlite_ingest[0]:.2f}×",
        f"{postgres_ingest[1] / postgres_ingest[0]:.2f}×",
        None,
    )
    row(
        f"GET /status at {built.counts.get('feedbacks', 0):,} feedbacks (best / median)",
        ms(sqlite_status),
        ms(postgres_status),
        statistics.median(postgres_status) / statistics.median(sqlite_status),
    )
    row(
        "POST /deploy into a 10,000-rule file (best / median)",
        ms(sqlite_deploy),
        ms(postgres_deploy),
        statistics.median(postgres_deploy) / statistics.median(sqlite_deploy),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

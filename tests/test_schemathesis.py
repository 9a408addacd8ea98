"""Property-based API tests: schemathesis generates requests from the served /openapi.json (a bounded number
per operation) and checks every answer: no 5xx, status codes and bodies as documented."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from autotrain.policy import Role
from bot.auth import mint_token
from tests.conftest import JWT_SECRET, REPO_ROOT, SHIPPED_RULES
from tests.serve_process import serving

EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def served_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`autotrain serve` on a free port for this module (limits high, so that generated traffic gets through)."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    shutil.copytree(SHIPPED_RULES, workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "AUTOTRAIN_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
        AUTOTRAIN_SCHEDULER="false",
    )
    with serving(workdir, env, log_level="warning") as (url, _):
        yield url
    log_text = (workdir / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-3000:]


ADMIN_TOKEN = mint_token(JWT_SECRET, subject="U_FUZZ", role=Role.ADMIN, ttl=timedelta(hours=1))


def test_api_conforms_to_its_own_schema(served_url: str) -> None:
    """Every operation of the served schema, EXAMPLES_PER_OPERATION generated requests each (derandomized,
    so CI is repeatable), with a valid admin token. (schemathesis's own pytest plugin is not used: it does
    not run on this pytest; its engine is driven here with hypothesis directly.)

    All of schemathesis's response checks run but one, "schema-valid request rejected": the API refuses on
    purpose some input a JSON schema cannot describe (text that is only control characters, metadata over
    4 KiB once encoded, NaN), with a 422 — which is what its own schema documents."""
    api = schemathesis.openapi.from_url(f"{served_url}/openapi.json")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]
    failures: dict[str, str] = {}
    calls = 0
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
            assert response.status_code < 500, response.text

        try:
            check()
        except Exception as exc:  # collect, so that one report lists every operation that fails
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
    assert calls >= len(operations) * 5, f"only {calls} requests were generated"
    print(f"schemathesis: {calls} requests over {len(operations)} operations, no failure")

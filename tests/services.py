"""The services some tests need beyond the standard library: Redis (shared rate limits) and PostgreSQL (the
production store). `.ci/run` installs them from Debian's packages, starts them and sets
`AUTOTRAIN_TEST_REDIS_URL` / `AUTOTRAIN_TEST_POSTGRES_URL` (and `AUTOTRAIN_TEST_REQUIRE_SERVICES=1`, so that
CI fails instead of skipping). Without them a developer's run skips those tests, and the end of the run says
which and how to get them."""

from __future__ import annotations

import os

import pytest

# read once, at import (collection): every test then runs with the AUTOTRAIN_ variables removed (conftest.py)
ENVIRONMENT = {name: value for name, value in os.environ.items() if name.startswith("AUTOTRAIN_TEST_")}
REQUIRED = ENVIRONMENT.get("AUTOTRAIN_TEST_REQUIRE_SERVICES") == "1"
HOW = "bash .ci/run starts one; or set {name} to a server of your own"

# the fresh PostgreSQL database of the running test in a `both_backends` module (tests/conftest.py), or None
current_postgres: list[str | None] = [None]


def service_url(name: str, env: str, request: pytest.FixtureRequest) -> str:
    """The service's URL, or skip (fail in CI) with a reason that says how to get it."""
    url = ENVIRONMENT.get(env)
    if url:
        return url
    reason = f"{name} not available: {HOW.format(name=env)}"
    if REQUIRED:
        pytest.fail(f"{reason} (AUTOTRAIN_TEST_REQUIRE_SERVICES=1: CI never skips these)")
    pytest.skip(reason)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A Redis server (each test uses its own key prefix through its own settings)."""
    return service_url("Redis", "AUTOTRAIN_TEST_REDIS_URL", request)

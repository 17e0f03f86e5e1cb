"""Property-based run of the OpenAPI schema (schemathesis): whatever the generated requests, no
5xx, and every response matches the schema (status codes, content types, bodies, headers).

Examples are bounded per operation so the run stays in the order of a minute.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from llmobs.config import Settings

from helpers.api import seed
from helpers.common import settings_env

#: Examples per operation; LLMOBS_FUZZ_EXAMPLES=500 for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("LLMOBS_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_settings(pg_server, redis_server, template_db) -> Iterator[Settings]:
    name = f"t_fuzz_{secrets.token_hex(4)}"
    admin = {
        "host": pg_server.host,
        "port": pg_server.port,
        "user": "postgres",
        "dbname": "postgres",
        "password": pg_server.password,
        "autocommit": True,
    }
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        # Its probes with spoilt credentials all come from one address and must each get 401: the
        # failed-authentication limit (tests/local/test_hostile.py) would turn them into 429s.
        limits = {"API_RATE_LIMIT_PER_MINUTE": "0", "AUTH_FAILURES_PER_MINUTE": "1000000"}
        yield Settings(settings_env(pg_server, redis_server, name, **limits), None)
    finally:
        from schemathesis.python.asgi import shutdown_lifespans

        shutdown_lifespans()  # closes the app's pools before the database goes
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def fuzz_key(fuzz_settings: Settings) -> str:
    seeded = seed(fuzz_settings)
    # An admin key: every operation is allowed, so responses exercise the handlers, not only auth.
    return seeded.a.keys["admin"]


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings):
    from llmobs.api.app import create_app

    return create_app(fuzz_settings)


def _schema() -> schemathesis.BaseSchema:
    """The schema, from an app that is never started: it does not depend on the settings' values."""
    from llmobs.api.app import create_app

    placeholders = {"LLMOBS_RUNTIME": "local", "DB_APP_PASSWORD": "x", "REDIS_PASSWORD": "x", "SECRET_KEY": "x" * 40}
    return schemathesis.openapi.from_dict(create_app(Settings(placeholders, None)).openapi())


# The event stream never ends by itself: tests/api/test_api_server.py covers it.
schema = _schema().exclude(path="/api/v1/traces/stream")


#: What schemathesis puts in Authorization; each test swaps in the real key (it asks for credentials
#: before any fixture has run).
PLACEHOLDER = "Bearer fuzz-key"


@schema.auth(refresh_interval=None)
class _BearerKey:
    """Credentials through schemathesis rather than fixed headers, so the cases that leave them out
    or spoil them on purpose go without, and must get 401."""

    def get(self, case, ctx):
        return PLACEHOLDER

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": data}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_conforms_to_its_schema(case, fuzz_app, fuzz_key):
    # The schema was loaded from a dict at import; its checks (including probes without credentials)
    # reach the app started for this module through schemathesis' ASGI transport.
    case.operation.schema.app = case.operation.app = fuzz_app
    if case.headers and case.headers.get("Authorization") == PLACEHOLDER:
        case.headers["Authorization"] = f"Bearer {fuzz_key}"
    # Not a schema violation: requests valid by the schema may still be refused by meaning (an opaque
    # cursor that is not one, from after to); those must be 4xx, which the other checks hold to.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])

"""Schemathesis fuzz of the OpenAPI schema: whatever arrives, never a 500 (with and without a valid key), and
every answer matches the schema: a documented status code, the documented content type and a body that
validates against that status's response model (our error body included).

Runs the real app (real Docker engine, real livekit-server); whatever it launches carries the
test's scope label and is removed afterwards. Command: see README ("Tenants, API keys ..." section).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings

ADMIN_KEY = generate()


@pytest.fixture
def fuzz_app(make_settings: Callable[..., Settings], tmp_path: Path):  # type: ignore[no-untyped-def]
    from api.app import create_app

    (tmp_path / "keys.yaml").write_text("keys:\n" + entry_yaml(name="fuzz-admin", key=ADMIN_KEY, client_id=None))
    return create_app(make_settings(api_keys_file=tmp_path / "keys.yaml"))


def _openapi() -> dict:  # type: ignore[type-arg]
    # The schema does not depend on settings; the requests go to the per-test app below.
    from api.app import create_app

    return create_app(Settings()).openapi()


# Eager schema: schemathesis' lazy `from_fixture` relies on pytest internals that pytest 9 renamed.
# Not fuzzed: the SSE stream never ends by design (tests/integration/test_events_feed.py reads it
# from a real server), nor a start's progress stream, which waits up to its timeout_s for an agent to join
# (tests/integration/test_start_trace.py reads it), and /dashboard is an open static page without parameters.
schema = schemathesis.openapi.from_dict(_openapi()).exclude(
    path=["/api/v1/admin/events/stream", "/api/v1/rooms/{room}/progress", "/dashboard"],
)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _check(case, app, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    response = case.call(app=app, headers=headers)
    assert response.status_code != 500, f"{case.method} {case.formatted_path} -> 500: {response.text[:500]}"
    case.validate_response(response, checks=CHECKS)
    content_type = response.headers.get("content-type") or [""]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    # Prometheus' exposition format is text; every other answer (errors included) is JSON.
    expected = "text/plain" if case.path == "/metrics" and response.status_code == 200 else "application/json"
    assert content_type.startswith(expected), response.text[:200]
    return response


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_with_admin_key_never_500(case, fuzz_app) -> None:  # type: ignore[no-untyped-def]
    _check(case, fuzz_app, {"Authorization": f"Bearer {ADMIN_KEY}"})


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_without_key_is_401_and_never_500(case, fuzz_app) -> None:  # type: ignore[no-untyped-def]
    response = _check(case, fuzz_app, {})
    if case.path not in ("/healthz", "/livez", "/readyz"):
        # 405: schemathesis probes other methods. FastAPI decodes the JSON body before any dependency
        # runs, so a body that is not JSON at all is a 422 even without a key; it reveals nothing.
        parse_error = response.status_code in (400, 422) and any(
            m in response.text for m in ("JSON decode error", "error parsing the body")
        )
        # 429: a fuzzed X-API-Key/Authorization value is a wrong key, and more than 20 from one address in a minute
        # are throttled (orchestrator/apikeys.FailureThrottle) — still a refusal without a key.
        assert response.status_code in (401, 405, 429) or parse_error, response.text[:200]

"""API keys: weak keys refused on load, salted hashes (old SHA-256 entries still read), a bounded 401 throttle."""

from __future__ import annotations

import hashlib

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from orchestrator.core.apikeys import FailureThrottle, KeyRing, entry_yaml, generate, weakness
from orchestrator.settings import Settings


@pytest.mark.parametrize("key", ["a", "password", "correcthorsebatterystaple", "a" * 64, "abababababababababababababababab", "0123456789" * 3])
def test_weak_keys_are_named(key: str) -> None:
    assert weakness(key) is not None


@pytest.mark.parametrize("key", [generate(), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "Zq3@8vL!pW2#rT6&yU1^mK9*Hs4%Jd7+"])
def test_strong_keys_pass(key: str) -> None:
    assert weakness(key) is None


@pytest.mark.parametrize("key", ["a", "password", "x" * 40])
def test_weak_admin_key_is_refused_at_start(key: str) -> None:
    with pytest.raises(ValidationError, match="ORCH_ADMIN_API_KEY"):
        Settings(admin_api_key=SecretStr(key))
    with pytest.raises(ValueError):
        KeyRing.load(path=None, admin_key=SecretStr(key))


def test_entries_are_salted_and_verify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = generate()
    a, b = yaml.safe_load(entry_yaml(name="x", key=key, client_id=None))[0], yaml.safe_load(entry_yaml(name="x", key=key, client_id=None))[0]
    assert "sha256" not in a and a["hash"] != b["hash"]  # a fresh salt per entry: equal keys, different hashes
    assert hashlib.sha256(key.encode()).hexdigest() not in a["hash"]
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + entry_yaml(name="new", key=key, client_id="c1"))
    ring = KeyRing.load(path=path, admin_key=None)
    found = ring.verify(key)
    assert found is not None and found.client_id == "c1"
    assert ring.verify(key + "x") is None and ring.verify("") is None


def test_existing_sha256_entries_still_verify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = generate()
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [{"name": "old", "role": "admin", "sha256": hashlib.sha256(key.encode()).hexdigest()}]}))
    ring = KeyRing.load(path=path, admin_key=None)
    assert ring.verify(key) is not None and ring.verify(generate()) is None


def test_throttle_blocks_a_source_after_repeated_failures_and_forgets() -> None:
    now = [0.0]
    t = FailureThrottle(max_failures=5, window_s=60, max_sources=100, clock=lambda: now[0])
    for _ in range(5):
        assert t.retry_after("10.0.0.1") is None
        t.failed("10.0.0.1")
    assert t.retry_after("10.0.0.1") is not None and t.retry_after("10.0.0.2") is None
    now[0] += 61
    assert t.retry_after("10.0.0.1") is None


def test_throttle_memory_is_bounded() -> None:
    t = FailureThrottle(max_failures=5, window_s=60, max_sources=1000)
    for i in range(50_000):
        t.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(t) <= 1000

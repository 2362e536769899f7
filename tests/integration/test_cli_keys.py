"""`orchestrator keys new | list | revoke` against a real `orchestrator serve`: a revoked key is refused without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devtools.docker_helpers import TINY_IMAGE
from devtools.serve import serve

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


def keys(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "keys", *args], env=env, capture_output=True, text=True, timeout=60)


def shown_key(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stderr.split("store it now): ", 1)[1].split()[0]


def test_a_revoked_key_is_refused_by_the_running_api(scope: str, tenants_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "api-keys.yaml"
    ops = shown_key(keys("new", "--name", "ops", "--file", str(path)))
    dash = shown_key(keys("new", "--name", "dashboard", "--file", str(path)))
    with serve(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, ORCH_API_KEYS_FILE=str(path),
               ORCH_RECONCILE_ENABLED="false", ORCH_USAGE_SAMPLING_ENABLED="false") as url:
        def status(key: str) -> int:
            return httpx.get(f"{url}/api/v1/admin/rooms", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code

        assert status(ops) == status(dash) == 200
        listed = json.loads(keys("list", "--file", str(path), "-o", "json").stdout)
        dash_id = next(r["id"] for r in listed if r["name"] == "dashboard")
        revoked = keys("revoke", dash_id, "--file", str(path))
        assert revoked.returncode == 0 and "revoked admin key 'dashboard'" in revoked.stdout, revoked.stderr
        started = time.monotonic()
        while status(dash) != 401:  # the API re-reads the file at most once a second
            assert time.monotonic() - started < 10, "the revoked key is still accepted"
            time.sleep(0.2)
        print(f"\nrevoked key refused {time.monotonic() - started:.2f}s after `keys revoke`")
        assert status(ops) == 200  # the others keep working
        # A key added while it runs is accepted the same way, without a restart.
        fresh = shown_key(keys("new", "--name", "ci", "--file", str(path)))
        started = time.monotonic()
        while status(fresh) != 200:
            assert time.monotonic() - started < 10, "the new key is not accepted"
            time.sleep(0.2)

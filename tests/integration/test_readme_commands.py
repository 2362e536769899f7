"""The README's per-tenant deployment, run as written: settings and keys, start, check, retire.

The code blocks are read from README.md ("Docker: per-tenant deployments with docker-compose") and each command in
them runs in a shell, from a copy of the repository's deployment files, in an operator's environment (no ORCH_*
variables but `ORCH_IMAGE`, the documented way to name the image the test built). Only the tenant's name (`acme`)
and port (`8001`) are swapped for the test's own, so parallel runs and other helpers never collide. This is the test
that would have caught `ORCH_CONFIG_DIR=deploy/acme` (docker-compose 1.29: "Named volume … no declaration was
found") and `down` failing without ORCH_SCOPE: the compose test next door passes absolute paths and every variable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest
import yaml

from devtools.docker_helpers import TINY_IMAGE, remove_scope
from devtools.livekit_server import LiveKitServer, free_port
from tests.integration.test_compose_tenants import IMAGE, orchestrator_image  # noqa: F401  (the module fixture)

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def code_block_with(needle: str) -> str:
    """The README code block that contains `needle` (there must be exactly one)."""
    blocks = re.findall(r"^ *```[a-z]*\n(.*?)^ *```", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    found = [b for b in blocks if needle in b]
    assert len(found) == 1, f"README.md has {len(found)} code blocks with {needle!r}"
    return found[0]


def commands(block: str) -> list[str]:
    """One shell command per logical line: continuations joined, indentation and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def operator_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `orchestrator` of this checkout
    return {**env, "COMPOSE_HTTP_TIMEOUT": "300", **extra}


def sh(command: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def test_per_tenant_deployment_runs_as_the_readme_says(
    tmp_path: Path, scope: str, livekit_server: LiveKitServer, docker_client: docker.DockerClient,
    orchestrator_image: str,  # noqa: F811
) -> None:
    name, port = scope, free_port()

    def ours(text: str) -> str:
        return text.replace("acme", name).replace("8001", str(port))

    # A copy of what the commands read from the repository root; the README's `my-tenants.yaml` is the operator's.
    work = tmp_path / "checkout"
    (work / "deploy").mkdir(parents=True)
    shutil.copy(ROOT / "docker-compose.yml", work)
    for f in ("tenant.env.example", "livekit.yaml"):
        shutil.copy(ROOT / "deploy" / f, work / "deploy")
    (work / "my-tenants.yaml").write_text(yaml.safe_dump({"clients": [{
        "id": name, "name": "Acme",
        "livekit": {"url": livekit_server.url, "api_key": livekit_server.api_key, "api_secret": livekit_server.api_secret},
        "agents": [{"id": f"{name}-farah", "slug": "farah", "name": "Farah"}],
    }]}))
    env = operator_env(ORCH_IMAGE=orchestrator_image)
    project = f"orch-{name}"
    try:
        # 2. Settings and keys.
        keys: dict[str, str] = {}
        for command in commands(ours(code_block_with("mkdir -p deploy/acme"))):
            done = sh(command, cwd=work, env=env)
            assert done.returncode == 0, f"{command}\n{done.stderr}"
            if "keys new" in command:
                keys[command.split("--name ", 1)[1].split()[0]] = done.stderr.split("store it now): ", 1)[1].split()[0]
        # "then fill deploy/acme.env": what this test's engine needs (the small image, no sampling).
        with (work / "deploy" / f"{name}.env").open("a") as f:
            f.write(f"ORCH_AGENT_IMAGE={TINY_IMAGE}\nORCH_AGENT_MEMORY=64m\n"
                    "ORCH_USAGE_SAMPLING_ENABLED=false\n")
        # 3. Start, then check it answers (a person retries the curl until the API is up; so does the test).
        for command in commands(ours(code_block_with("curl -s http://127.0.0.1:8001/healthz"))):
            deadline = time.monotonic() + (90 if command.startswith("curl") else 0)
            while True:
                done = sh(command, cwd=work, env=env)
                if done.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert json.loads(done.stdout)["status"] == "ok"
        # A call in the tenant's room, so that retiring has something to close.
        made = httpx.post(f"http://127.0.0.1:{port}/api/v1/trigger-agent", timeout=60,
                          headers={"Authorization": f"Bearer {keys['ops']}"},
                          json={"agent_slug": "farah", "room_name": "support-call-7", "user_id": "u", "client_id": name})
        assert made.status_code == 201, made.text
        # 4. Retire: its rooms, close, down (in a shell that has none of the deployment's variables).
        retire = commands(ours(code_block_with("docker-compose -p orch-acme down")))
        listed = sh(retire[0], cwd=work, env={**env, "OPS_KEY": keys["ops"]})
        assert listed.returncode == 0 and [r["room"] for r in json.loads(listed.stdout)] == ["support-call-7"], listed.stderr
        closed = sh(retire[1], cwd=work, env={**env, "OPS_KEY": keys["ops"]})
        assert closed.returncode == 0 and "closed room support-call-7" in closed.stdout, closed.stderr
        down = sh(retire[2], cwd=work, env=operator_env())
        assert down.returncode == 0, down.stderr
        label = f"com.docker.compose.project={project}"
        left = [c.name for c in docker_client.containers.list(all=True, filters={"label": label})]
        left += [c.name for c in docker_client.containers.list(all=True, filters={"label": f"agent-orchestrator.scope={name}"})]
        assert left == [], f"left behind: {left}"
    except BaseException:
        logs = subprocess.run(["docker-compose", "-p", project, "logs", "--no-color", "--tail", "60"], cwd=work,
                              env=operator_env(), capture_output=True, text=True, timeout=120)
        print(f"\n==== compose logs of {project} ====\n{logs.stdout}{logs.stderr}")
        raise
    finally:
        # With -v: the README's own `down` keeps the deployment's state volume (its ownership key) on purpose; the
        # test's cleanup must not (one `orch-test-<hex>_state` volume was left per run).
        subprocess.run(["docker-compose", "-p", project, "down", "-v", "--remove-orphans"], cwd=work, env=operator_env(),
                       capture_output=True, text=True, timeout=400)
        remove_scope(docker_client, name)

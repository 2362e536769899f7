"""Table tests of the Swarm service spec's restricted profile and of secrets handed over outside the spec."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from orchestrator.rules.naming import Label
from orchestrator.runtime.swarm.rules import secret_name, secret_prelude, service_spec

LABELS = {Label.MANAGED: "true", Label.SCOPE: "s"}
TOKEN, KEY = "eyJhbGciOi.payload.sig", "sk-secret-value"


def spec(**over: object) -> dict:
    base: dict = dict(
        name="agent_acme_farah_r-12345678", image="img:1", labels=LABELS,
        env={"LIVEKIT_TOKEN": TOKEN, "OPENAI_API_KEY": KEY, "LIVEKIT_ROOM": "r"},
        memory="256m", cpus=0.5, pids=128, network="orch-agents-s", restart_policy="on-failure", restart_max=3,
        restart_delay_s=1.0, stop_timeout_s=10, constraints=[], spread=None, user="10001:10001",
        tmpfs={"/tmp": "size=64m"}, log_max_size="5m", log_max_files=2,
        secrets={"LIVEKIT_TOKEN": ("id1", "svc-livekit-token-aa"), "OPENAI_API_KEY": ("id2", "svc-openai-api-key-aa")},
        command=["python3", "-m", "agent_image"],
    )
    return service_spec(**{**base, **over})


def test_the_restricted_profile_as_on_docker() -> None:
    task = spec()["TaskTemplate"]
    c = task["ContainerSpec"]
    assert c["User"] == "10001:10001" and c["ReadOnly"] is True and c["Init"] is True
    assert c["CapabilityDrop"] == ["ALL"] and "CapabilityAdd" not in c
    assert c["Mounts"] == [{"Type": "tmpfs", "Target": "/tmp", "ReadOnly": False, "TmpfsOptions": {"SizeBytes": 64 << 20}}]
    assert task["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "5m", "max-file": "2"}}
    assert task["Resources"]["Limits"]["Pids"] == 128
    assert task["Networks"] == [{"Target": "orch-agents-s"}]


@pytest.mark.parametrize(("over", "key", "expected"), [
    ({"cap_add": ("NET_BIND_SERVICE",)}, "CapabilityAdd", ["NET_BIND_SERVICE"]),
    ({"read_only_root": False}, "ReadOnly", False),
    ({"tmpfs": {"/tmp": "size=1m,mode=1777", "/run/x": ""}}, "Mounts", [
        {"Type": "tmpfs", "Target": "/tmp", "ReadOnly": False, "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1777}},
        {"Type": "tmpfs", "Target": "/run/x", "ReadOnly": False, "TmpfsOptions": {}},
    ]),
])
def test_operator_loosening_maps_through(over: dict, key: str, expected: object) -> None:
    assert spec(**over)["TaskTemplate"]["ContainerSpec"][key] == expected


def test_no_secret_value_anywhere_in_the_spec() -> None:
    body = spec()
    text = json.dumps(body)
    assert TOKEN not in text and KEY not in text
    c = body["TaskTemplate"]["ContainerSpec"]
    assert c["Env"] == ["LIVEKIT_ROOM=r"]
    assert c["Secrets"] == [
        {"SecretID": "id1", "SecretName": "svc-livekit-token-aa", "File": {"Name": "LIVEKIT_TOKEN", "UID": "10001", "GID": "10001", "Mode": 0o400}},
        {"SecretID": "id2", "SecretName": "svc-openai-api-key-aa", "File": {"Name": "OPENAI_API_KEY", "UID": "10001", "GID": "10001", "Mode": 0o400}},
    ]
    assert c["Command"][:2] == ["/bin/sh", "-c"] and c["Command"][3:] == ["agent", "python3", "-m", "agent_image"]


def test_without_secrets_the_image_command_is_left_alone() -> None:
    c = spec(secrets=None, command=None)["TaskTemplate"]["ContainerSpec"]
    assert "Command" not in c and "Secrets" not in c and f"LIVEKIT_TOKEN={TOKEN}" in c["Env"]


def test_secrets_without_the_image_command_are_refused() -> None:
    with pytest.raises(ValueError, match="command"):
        spec(command=None)


def test_the_prelude_exports_each_secret_file_then_execs_the_command(tmp_path) -> None:
    (tmp_path / "LIVEKIT_TOKEN").write_text(TOKEN)
    (tmp_path / "OPENAI_API_KEY").write_text(KEY + "\n")
    line = secret_prelude(["OPENAI_API_KEY", "LIVEKIT_TOKEN"]).replace("/run/secrets", str(tmp_path))
    out = subprocess.run(["/bin/sh", "-c", line, "agent", "sh", "-c", 'printf "%s|%s" "$LIVEKIT_TOKEN" "$OPENAI_API_KEY"'],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout == f"{TOKEN}|{KEY}"


def test_a_missing_secret_file_stops_the_agent_before_its_command() -> None:
    out = subprocess.run(["/bin/sh", "-c", secret_prelude(["LIVEKIT_TOKEN"]).replace("/run/secrets", "/nonexistent"), "agent", "echo", "ran"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "ran" not in out.stdout


@pytest.mark.parametrize("bad", ["A B", "1X", "X;rm -rf /", "$(id)", ""])
def test_the_prelude_takes_only_variable_names(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_prelude([bad])


@pytest.mark.parametrize("service", ["agent_a-1234abcd", "x" * 63, "agent_df91fd06_farah_test-72211318-unroutable-" + "-" * 20, "_" * 63])
@pytest.mark.parametrize("key", ["LIVEKIT_TOKEN", "OPENAI_API_KEY"])
def test_secret_names_follow_the_engines_rule(service: str, key: str) -> None:
    name = secret_name(service, key, "ff00aa11")
    assert len(name) <= 64 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9]", name), name
    assert name.endswith(f"-{key.lower().replace('_', '-')}-ff00aa11")


def test_secret_name_keeps_a_short_service_name_whole() -> None:
    assert secret_name("agent_a-1234abcd", "LIVEKIT_TOKEN", "ff00") == "agent_a-1234abcd-livekit-token-ff00"

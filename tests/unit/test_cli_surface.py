"""The CLI's surface: -h everywhere, help on every option, one -o/--output flag, plain causes, typo warnings, keys.

Walks the real command tree (click's, under Typer), so a new command or option without help fails here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cli.hints import cause
from orchestrator.core.apikeys import KeyRing, read_keys_file
from orchestrator.core.variables import NOT_SETTINGS, unknown_variables
from orchestrator.settings import Settings

ROOT_COMMAND = typer.main.get_command(app)
# Commands that print data (as opposed to acting, or printing a fixed JSON document for cron / scripts).
PRINTING = {"ps", "config", "trigger", "close", "keys list"}


def commands(group: Any = ROOT_COMMAND, prefix: str = "") -> dict[str, Any]:
    """Every command by its path ("keys revoke"); the root is "". (Typer carries its own copy of click.)"""
    found = {prefix.strip(): group}
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            found |= commands(sub, f"{prefix} {name}")
    return found


ALL = commands()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env, prog_name="orchestrator")


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Through the console script's own entry (expected failures become one line and an exit code)."""
    with pytest.raises(SystemExit) as done:
        app(list(args), prog_name="orchestrator")
    return int(done.value.code or 0), capsys.readouterr().err


def test_the_tree_is_what_the_readme_documents() -> None:
    assert {"ps", "logs", "close", "trigger", "serve", "network", "config", "reconcile", "keys new", "keys list",
            "keys revoke", "tenants set-credentials", "tenants rewrap", "tenants invalidate"} <= set(ALL)


@pytest.mark.parametrize("path", sorted(ALL))
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_answers_h_and_help(path: str, flag: str) -> None:
    result = invoke(*path.split(), flag)
    assert result.exit_code == 0 and result.stdout.startswith("Usage: orchestrator"), result.output
    assert "╭" not in result.stdout  # plain text, no rich boxes (help lands in cron mails and pipes)


@pytest.mark.parametrize("path", sorted(ALL))
def test_every_option_and_argument_says_what_it_is(path: str) -> None:
    missing = [p.name for p in ALL[path].params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"`orchestrator {path}`: no help for {missing}"


@pytest.mark.parametrize("path", sorted(ALL))
def test_one_output_flag(path: str) -> None:
    options = {o: p for p in ALL[path].params if p.param_type_name == "option" for o in p.opts}
    assert "--format" not in options, "the flag is -o/--output everywhere"
    assert "--json" not in options or options["--json"].hidden, "--json is only the hidden older spelling of -o json"
    if path in PRINTING:
        assert options["-o"] is options["--output"], f"`orchestrator {path}` prints data: it needs -o/--output"


def test_a_wrong_output_is_a_usage_error_naming_the_choices() -> None:
    result = invoke("config", "-o", "yaml")
    assert result.exit_code == 2 and "'yaml' is not one of 'table', 'json', 'name'" in result.stderr


def test_config_output_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    names = invoke("config", "-o", "name").stdout.split()
    assert "ORCH_SCOPE" in names and "ORCH_BIND" in names and len(names) == len(json.loads(invoke("config", "-o", "json").stdout))


@pytest.mark.parametrize(("raw", "plain"), [
    ("Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))",
     "no such socket"),
    ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /version (Caused by "
     "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new connection: [Errno 111] "
     "Connection refused\"))", "connection refused"),
    ("('Connection aborted.', PermissionError(13, 'Permission denied'))", "permission denied"),
    ("ConnectError: [Errno -2] Name or service not known", "host name not resolved"),
    ("ReadTimeout: timed out", "timed out"),
    ("RemoteProtocolError: Server disconnected without sending a response.", "connection dropped"),
    ("something new", "no answer"),
])
def test_connection_errors_become_plain_causes(raw: str, plain: str) -> None:
    assert cause(raw) == plain


SETTINGS = [f"ORCH_{n.upper()}" for n in Settings.model_fields]


@pytest.mark.parametrize(("environ", "expected"), [
    ({"ORCH_GRACE_PERIOD": "30"}, ["unknown variable ORCH_GRACE_PERIOD is ignored; did you mean ORCH_GRACE_PERIOD_S?"]),
    ({"ORCH_SCOPE": "a", "ORCH_URL": "u", "ORCH_API_KEY": "k", "ORCH_BIND": "0.0.0.0", "PATH": "/bin"}, []),
    ({"ORCH_MAX_AGENT_TOTAL": "9"}, ["unknown variable ORCH_MAX_AGENT_TOTAL is ignored; did you mean ORCH_MAX_AGENTS_TOTAL?"]),
    ({"ORCH_ZZZ": "1"}, ["unknown variable ORCH_ZZZ is ignored; `orchestrator config` lists the settings"]),
    ({"orch_grace_period_s": "1", "XORCH_A": "1"}, []),  # not ours
])
def test_unknown_variables_are_named_with_the_closest_setting(environ: dict[str, str], expected: list[str]) -> None:
    assert unknown_variables(environ, settings=SETTINGS) == expected


def test_the_warning_is_given_when_settings_load(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ORCH_RECONCILE_INTERVAL", "5")
    with caplog.at_level(logging.WARNING, logger="orchestrator.settings"):
        Settings.load()
    assert "did you mean ORCH_RECONCILE_INTERVAL_S?" in caplog.text


def test_every_other_variable_is_documented_in_the_reference() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [name for name in NOT_SETTINGS if f"`{name}`" not in readme] == []


# ---- keys list / revoke ---------------------------------------------------------------------------------


def new_key(path: Path, name: str, *client: str) -> str:
    result = invoke("keys", "new", "--name", name, *(("--client", client[0]) if client else ()), "--file", str(path))
    assert result.exit_code == 0, result.output
    return result.stderr.split("store it now): ", 1)[1].split()[0]


def test_keys_list_shows_ids_and_names_never_keys_or_hashes(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    admin, client = new_key(path, "ops"), new_key(path, "acme-frontend", "acme")
    ids = [e.id for e in read_keys_file(path)]
    table = invoke("keys", "list", "--file", str(path))
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split() == ["ID", "NAME", "ROLE", "CLIENT_ID", "HASH"]
    rows = json.loads(invoke("keys", "list", "--file", str(path), "-o", "json").stdout)
    assert [(r["id"], r["name"], r["role"], r["client_id"]) for r in rows] == [(ids[0], "ops", "admin", ""), (ids[1], "acme-frontend", "client", "acme")]
    assert invoke("keys", "list", "-o", "name", env={"ORCH_API_KEYS_FILE": str(path)}).stdout == "ops\nacme-frontend\n"
    every = table.stdout + json.dumps(rows)
    secrets = [admin, client] + [e.hash.split("$")[2] for e in read_keys_file(path) if e.hash]
    assert not [s for s in secrets if s in every]


def test_keys_revoke_by_id_or_name_and_a_running_ring_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    admin, client = new_key(path, "ops"), new_key(path, "acme-frontend", "acme")
    now = [0.0]
    ring = KeyRing(read_keys_file(path), path=path, clock=lambda: now[0])  # re-read at most once a second: move time
    assert ring.verify(client) is not None
    client_id = read_keys_file(path)[1].id
    done = invoke("keys", "revoke", client_id, "--file", str(path))
    assert done.exit_code == 0 and f"revoked client key 'acme-frontend' (id {client_id})" in done.stdout
    assert [e.name for e in read_keys_file(path)] == ["ops"]
    assert ring.verify(client) is not None  # within the second: not looked at yet
    now[0] += 1.5
    assert ring.verify(client) is None and ring.verify(admin) is not None
    # Revoking the last key refuses every key; it never switches authentication off.
    assert invoke("keys", "revoke", "ops", "--file", str(path)).exit_code == 0
    now[0] += 1.5
    assert ring.enabled and ring.verify(admin) is None


def test_keys_revoke_of_an_unknown_id_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    new_key(path, "ops")
    code, err = fails(capsys, "keys", "revoke", "nope", "--file", str(path))
    assert code == 1 and "no key with id or name 'nope'" in err and "(ops)" in err and len(err.strip().splitlines()) == 1, err


def test_keys_list_without_a_file_says_how_to_name_one(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_API_KEYS_FILE", raising=False)
    code, err = fails(capsys, "keys", "list")
    assert code == 2 and err == "orchestrator: no keys file: pass --file or set ORCH_API_KEYS_FILE\n"


def test_a_file_that_stops_loading_keeps_the_keys_read_before(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    admin = new_key(path, "ops")
    now = [0.0]
    ring = KeyRing(read_keys_file(path), path=path, clock=lambda: now[0])
    path.write_text("keys: [\n")
    now[0] += 1.5
    assert ring.verify(admin) is not None

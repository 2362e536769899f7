"""The CLI's expected failures: one line on stderr, a documented exit code, never a traceback.

The engine is absent (a socket path nobody listens on), and the API is either not there or a real HTTP
server on loopback answering 503 / 401: no Docker needed, so this runs in the unit tier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from orchestrator.cli import app
from devtools.livekit_server import free_port

NO_ENGINE = "unix:///nonexistent/docker.sock"


class _Answer(BaseHTTPRequestHandler):
    status = 503
    body: dict[str, object] = {"detail": "Docker engine unreachable during list", "code": "dependency_unavailable"}

    def _reply(self) -> None:
        data = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.status == 503:
            self.send_header("Retry-After", "5")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_answering() -> Iterator[callable]:  # type: ignore[valid-type]
    servers: list[HTTPServer] = []

    def start(status: int, body: dict[str, object]) -> str:
        handler = type("H", (_Answer,), {"status": status, "body": body})
        server = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_DOCKER_HOST", NO_ENGINE)
    monkeypatch.setenv("ORCH_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        app(list(args))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


LIBRARY_TEXT = ("HTTPConnectionPool", "Max retries", "Connection aborted", "FileNotFoundError", "NewConnectionError",
                "urllib3", "ConnectError", "Errno")


@pytest.mark.parametrize("args", [["ps"], ["ps", "--json"], ["ps", "-o", "json"], ["ps", "--docker-only"], ["ps", "-q"],
                                  ["logs", "r1"], ["logs", "-f", "r1"], ["network"]])
def test_engine_and_api_down_is_one_line_exit_3(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = run(capsys, *args)
    line = one_line(err)
    assert code == 3 and out == ""
    assert f"the Docker engine at {NO_ENGINE} is not reachable (no such socket): is the Docker engine running?" in line, line
    assert not [t for t in LIBRARY_TEXT if t in line], line  # the plain cause, not the client library's words


def test_an_engine_refusing_connections_is_named_with_its_address(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")  # nothing listens there
    code, _, err = run(capsys, "ps", "--docker-only")
    line = one_line(err)
    assert code == 3 and "is not reachable (connection refused)" in line and "ORCH_DOCKER_HOST" in line, line
    assert not [t for t in LIBRARY_TEXT if t in line], line


@pytest.mark.parametrize("args", [["trigger", "farah", "--client", "c1"], ["close", "r1"], ["tenants", "invalidate"]])
def test_api_down_is_not_reachable_exit_3(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _, err = run(capsys, *args)
    line = one_line(err)
    assert code == 3 and "is not reachable (connection refused): is `orchestrator serve` running there?" in line, line
    assert not [t for t in LIBRARY_TEXT if t in line], line


@pytest.mark.parametrize("args", [["trigger", "farah", "--client", "c1"], ["close", "r1"], ["tenants", "invalidate"], ["ps"]])
def test_a_503_is_reported_as_a_503_not_as_unreachable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api_answering, args: list[str]  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("ORCH_URL", api_answering(503, {"detail": "Docker engine unreachable during list", "code": "dependency_unavailable"}))
    code, _, err = run(capsys, *args)
    line = one_line(err)
    assert code == 3 and "answered 503: Docker engine unreachable during list; retry after 5 s" in line, line
    assert "not reachable" not in line.split(" and ")[0]


def test_a_refused_key_is_exit_1_and_says_which_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api_answering  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("ORCH_URL", api_answering(401, {"detail": "the API key is not valid", "code": "unauthorized"}))
    monkeypatch.setenv("ORCH_CLI_API_KEY", "ak_old-name-still-read")  # the older variable is an alias
    code, _, err = run(capsys, "tenants", "invalidate")
    assert code == 1 and "ORCH_API_KEY" in one_line(err) and "ak_old-name-still-read" not in err


def test_bad_settings_are_exit_2_naming_the_variable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_PORT", "eighty")
    code, _, err = run(capsys, "ps", "--docker-only")
    assert code == 2 and one_line(err).startswith("orchestrator: invalid settings: ORCH_PORT: ")


@pytest.mark.parametrize(("content", "problem"), [
    ("keys: [\n", "not valid YAML at line 2"),
    ("keys:\n- name: ops\n  role: admin\n  sha256: nothex\n", "keys.0.sha256: String should match pattern"),
    ("clients: []\n", "keys: Field required"),
])
def test_serve_names_a_bad_keys_file_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, problem: str
) -> None:
    (tmp_path / "keys.yaml").write_text(content)
    monkeypatch.setenv("ORCH_API_KEYS_FILE", str(tmp_path / "keys.yaml"))
    code, _, err = run(capsys, "serve")
    line = one_line(err)
    assert code == 2 and f"bad configuration file {tmp_path / 'keys.yaml'}: " in line and problem in line, line


def test_serve_names_a_bad_tenants_file_in_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tenants.yaml").write_text("clients:\n- id: acme\n  name: Acme\n")
    monkeypatch.setenv("ORCH_TENANTS_FILE", str(tmp_path / "tenants.yaml"))
    code, _, err = run(capsys, "serve")
    line = one_line(err)
    assert code == 2 and f"{tmp_path / 'tenants.yaml'}: clients.0.livekit: Field required" in line, line
    monkeypatch.setenv("ORCH_TENANTS_FILE", str(tmp_path / "missing.yaml"))
    assert "missing.yaml: no such file" in one_line(run(capsys, "serve")[2])


def test_version_and_config_masks_secrets(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import __version__

    assert run(capsys, "--version")[:2] == (0, f"orchestrator {__version__}\n")
    from orchestrator.core.apikeys import generate

    admin, cli_key = generate(), generate()
    monkeypatch.setenv("ORCH_ADMIN_API_KEY", admin)
    monkeypatch.setenv("ORCH_API_KEY", cli_key)
    monkeypatch.setenv("ORCH_GRACE_PERIOD_S", "45")
    code, out, _ = run(capsys, "config", "-o", "json")
    rows = {r["variable"]: r for r in json.loads(out)}
    assert code == 0 and admin not in out and cli_key not in out
    assert rows["ORCH_ADMIN_API_KEY"]["value"] == rows["ORCH_API_KEY"]["value"] == "(set, hidden)"
    assert (rows["ORCH_GRACE_PERIOD_S"]["value"], rows["ORCH_GRACE_PERIOD_S"]["default"], rows["ORCH_GRACE_PERIOD_S"]["source"]) == ("45.0", "60.0", "env")
    from orchestrator.settings import Settings

    assert {f"ORCH_{n.upper()}" for n in Settings.model_fields} <= set(rows)


def test_python_dash_m_has_no_traceback_either() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_DOCKER_HOST=NO_ENGINE, ORCH_URL=f"http://127.0.0.1:{free_port()}")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ps"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stdout == ""
    assert one_line(done.stderr).startswith("orchestrator: the orchestrator API at ")


def test_dev_keys_do_not_put_pyjwt_warnings_into_cron_output() -> None:
    """LiveKit's dev keys are short; PyJWT's InsecureKeyLengthWarning would land in every cron mail."""
    code = "import orchestrator.cli.main, jwt; jwt.encode({'a': 1}, 'secret', algorithm='HS256')"
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "InsecureKeyLengthWarning" not in done.stderr, done.stderr

"""`orchestrator keys new --file` always leaves a keys file `serve` loads, whatever it started from."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.core.apikeys import KeyRing, add_to_keys_file, entry_yaml, generate, new_entry
from orchestrator.cli import app
from orchestrator.core.config_files import ConfigFileError

ROOT = Path(__file__).resolve().parents[2]


def keys_new(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["keys", "new", *args])
    assert result.exit_code == 0, result.output
    key = result.stderr.split("store it now): ", 1)[1].split()[0]
    return key, result.stdout


@pytest.mark.parametrize("start", ["missing", "empty", "example"])
def test_keys_new_file_makes_a_loadable_file(tmp_path: Path, start: str) -> None:
    path = tmp_path / "api-keys.yaml"
    if start == "empty":
        path.write_text("")
    elif start == "example":
        path.write_text((ROOT / "deploy/config/api-keys.yaml.example").read_text())
    admin, _ = keys_new("--name", "ops", "--file", str(path))
    client, _ = keys_new("--name", "acme-frontend", "--client", "acme", "--file", str(path))
    ring = KeyRing.load(path=path, admin_key=None)
    assert [(e.name, e.role, e.client_id) for e in ring.entries] == [("ops", "admin", None), ("acme-frontend", "client", "acme")]
    assert ring.verify(admin).name == "ops" and ring.verify(client).client_id == "acme"  # type: ignore[union-attr]
    assert admin not in path.read_text() and oct(path.stat().st_mode & 0o777) == "0o600"


def test_appending_stdout_to_the_example_or_a_fresh_file_also_loads(tmp_path: Path) -> None:
    """The README's older habit, `keys new >> file`, gives a loadable file too."""
    example = tmp_path / "example.yaml"
    example.write_text((ROOT / "deploy/config/api-keys.yaml.example").read_text())
    fresh = tmp_path / "fresh.yaml"
    for path in (example, fresh):
        key, entry = keys_new("--name", "ops")
        with path.open("a") as f:
            f.write(entry)
        assert KeyRing.load(path=path, admin_key=None).verify(key) is not None


def test_a_second_key_with_the_same_name_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    add_to_keys_file(path, new_entry(name="ops", key=generate(), client_id=None))
    before = path.read_text()
    with pytest.raises(ConfigFileError, match="already there"):
        add_to_keys_file(path, new_entry(name="ops", key=generate(), client_id=None))
    assert path.read_text() == before
    assert entry_yaml(name="x", key=generate(), client_id=None).startswith("- name: x")

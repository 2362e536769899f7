"""The ownership signing key: the setting wins; else generated once into the deployment's state, private."""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic import SecretStr

from orchestrator.services.signing_key import signing_key
from orchestrator.settings import Settings


def test_generated_once_private_and_shared_by_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ownership.key"
    first = signing_key(Settings(scope="sk-a", ownership_key_file=path))
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    # Another process of the deployment (a fresh cache) reads the same key rather than making its own.
    from orchestrator.services import signing_key as module
    module._loaded.clear()
    assert signing_key(Settings(scope="sk-a", ownership_key_file=path)) == first
    assert [p.name for p in path.parent.iterdir()] == ["ownership.key"]  # no temporary file left behind


def test_the_setting_wins_over_the_file(tmp_path: Path) -> None:
    s = Settings(scope="sk-b", ownership_key=SecretStr("operator-key-" + "x" * 32), ownership_key_file=tmp_path / "k")
    assert signing_key(s) == ("operator-key-" + "x" * 32).encode() and not (tmp_path / "k").exists()

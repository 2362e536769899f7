"""API keys: generated once, stored only as SHA-256 hashes, verified with constant-time comparison (pure)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from .config_files import ConfigFileError, load_model, read_yaml

PREFIX = "ak_"


def generate() -> str:
    """A new key: 256 random bits. It is shown once; only its hash is kept."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    # Keys are random 256-bit tokens, so a fast hash is enough (no password-style stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


class KeyEntry(BaseModel):
    """One line of the keys file: who the key is for and its hash, never the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "client"]
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _client_needs_id(self) -> "KeyEntry":
        if (self.role == "client") != (self.client_id is not None):
            raise ValueError("a client key needs client_id; an admin key must not have one")
        return self


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[KeyEntry]

    @model_validator(mode="before")
    @classmethod
    def _tolerant(cls, data: object) -> object:
        # An empty file, `keys:` with nothing under it, or a bare list of entries (what `keys new >> file`
        # gives on a fresh file) all mean what they say.
        if data is None:
            return {"keys": []}
        if isinstance(data, list):
            return {"keys": data}
        if isinstance(data, dict) and data.get("keys", []) is None:
            return {**data, "keys": []}
        return data


def read_keys_file(path: Path) -> list[KeyEntry]:
    """The entries of a keys file; a bad file is a ConfigFileError naming it and the problem."""
    return load_model(path, _KeysFile, read_yaml(path)).keys


def add_to_keys_file(path: Path, entry: KeyEntry) -> None:
    """Append one entry, creating the file (mode 600) when missing; the result is always a loadable keys file.

    Written whole through a temporary file and a rename, so a reader never sees half a file."""
    entries = read_keys_file(path) if path.exists() and path.read_text().strip() else []
    if any(e.name == entry.name for e in entries):
        raise ConfigFileError(path, f"a key named {entry.name!r} is already there; pick another --name")
    head = "# Hashes only: add entries with `orchestrator keys new --name NAME [--client ID] --file THIS_FILE`.\n"
    body = yaml.safe_dump({"keys": [e.model_dump(exclude_none=True) for e in [*entries, entry]]}, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(head + body)
    tmp.chmod(0o600)
    tmp.replace(path)


@dataclass(frozen=True)
class KeyRing:
    entries: tuple[KeyEntry, ...]

    @property
    def enabled(self) -> bool:
        """No key configured at all means auth is off (the embedded local default)."""
        return bool(self.entries)

    def verify(self, presented: str) -> KeyEntry | None:
        """The entry whose hash matches; every entry is compared, in constant time, with no early exit."""
        wanted = digest(presented).encode()
        found: KeyEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(wanted, entry.sha256.encode()):
                found = entry
        return found

    @classmethod
    def load(cls, *, path: Path | None, admin_key: SecretStr | None) -> "KeyRing":
        entries: list[KeyEntry] = []
        if path is not None:
            entries += read_keys_file(Path(path))
        if admin_key is not None:  # ORCH_ADMIN_API_KEY: hashed on load, the plaintext is not kept
            entries.append(KeyEntry(name="env-admin", role="admin", sha256=digest(admin_key.get_secret_value())))
        return cls(entries=tuple(entries))


def new_entry(*, name: str, key: str, client_id: str | None) -> KeyEntry:
    return KeyEntry(name=name, role="client" if client_id else "admin", client_id=client_id, sha256=digest(key))


def entry_yaml(*, name: str, key: str, client_id: str | None) -> str:
    """The keys-file entry for a freshly generated key (what `orchestrator keys new` prints)."""
    entry = new_entry(name=name, key=key, client_id=client_id)
    return yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False)

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
            entries += _KeysFile.model_validate(yaml.safe_load(Path(path).read_text()) or {"keys": []}).keys
        if admin_key is not None:  # ORCH_ADMIN_API_KEY: hashed on load, the plaintext is not kept
            entries.append(KeyEntry(name="env-admin", role="admin", sha256=digest(admin_key.get_secret_value())))
        return cls(entries=tuple(entries))


def entry_yaml(*, name: str, key: str, client_id: str | None) -> str:
    """The keys-file entry for a freshly generated key (what `orchestrator keys new` prints)."""
    entry = KeyEntry(name=name, role="client" if client_id else "admin", client_id=client_id, sha256=digest(key))
    return yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False)

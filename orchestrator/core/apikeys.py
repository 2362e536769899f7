"""API keys: generated once, stored only as salted hashes, verified in constant time; weak keys refused (pure).

Hash choice: HMAC-SHA256 under a random per-entry salt (`hmac-sha256$<salt hex>$<digest hex>`).
Keys are 256-bit random tokens (`orchestrator keys new`) and typed keys below an entropy floor are
refused, so password-style stretching (scrypt) would add nothing against guessing while costing
CPU on every request for every entry, which a flood of wrong keys would turn into a lever. A
deployment-wide pepper would add a secret to provision and rotate for the same small gain. The salt
makes equal keys hash differently and defeats precomputed tables. Entries written before
(`sha256: <hex>`, unsalted) are still read, with a warning to re-issue them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from orchestrator.core.config_files import ConfigFileError, load_model, read_yaml

log = logging.getLogger(__name__)

PREFIX = "ak_"
SCHEME = "hmac-sha256"
MIN_KEY_CHARS = 24
MIN_KEY_BITS = 128  # estimated from the key's own character frequencies (generated keys: ~210; hex of 32 bytes: ~240)


def generate() -> str:
    """A new key: 256 random bits. It is shown once; only its salted hash is kept."""
    return PREFIX + secrets.token_urlsafe(32)


def weakness(key: str) -> str | None:
    """Why `key` is too weak to guard an API, or None. A floor, not a proof: length and a Shannon estimate."""
    if len(key) < MIN_KEY_CHARS:
        return f"is shorter than {MIN_KEY_CHARS} characters"
    if key in (key + key)[1:-1]:
        return "repeats a shorter pattern"
    counts = Counter(key)
    bits = -sum(n * math.log2(n / len(key)) for n in counts.values())
    if bits < MIN_KEY_BITS:
        return f"is too predictable (about {bits:.0f} bits; at least {MIN_KEY_BITS} needed)"
    return None


def salted_hash(key: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    return f"{SCHEME}${salt.hex()}${hmac.new(salt, key.encode(), hashlib.sha256).hexdigest()}"


def _legacy_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyEntry(BaseModel):
    """One line of the keys file: who the key is for and its hash, never the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "client"]
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    hash: str | None = Field(default=None, pattern=r"^hmac-sha256\$[0-9a-f]{32}\$[0-9a-f]{64}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # unsalted, from before; still read

    @model_validator(mode="after")
    def _checks(self) -> "KeyEntry":
        if (self.role == "client") != (self.client_id is not None):
            raise ValueError("a client key needs client_id; an admin key must not have one")
        if (self.hash is None) == (self.sha256 is None):
            raise ValueError("an entry needs exactly one of `hash` (from `orchestrator keys new`) or `sha256`")
        return self

    @property
    def id(self) -> str:
        """A short handle for `keys list` / `keys revoke`: the first 8 hex of the entry's random salt (of the
        digest for an old unsalted entry). It says nothing about the key, and stays the same for the entry's life."""
        return self.hash.split("$")[1][:8] if self.hash is not None else (self.sha256 or "")[:8]

    def matches(self, presented: str) -> bool:
        if self.hash is not None:
            _, salt, digest = self.hash.split("$")
            return hmac.compare_digest(salted_hash(presented, salt=bytes.fromhex(salt)), self.hash)
        return hmac.compare_digest(_legacy_digest(presented), self.sha256 or "")


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
    """Append one entry, creating the file (mode 600) when missing; the result is always a loadable keys file."""
    entries = read_keys_file(path) if path.exists() and path.read_text().strip() else []
    if any(e.name == entry.name for e in entries):
        raise ConfigFileError(path, f"a key named {entry.name!r} is already there; pick another --name")
    _write_keys_file(path, [*entries, entry])


def remove_from_keys_file(path: Path, which: str) -> KeyEntry:
    """Remove the one entry whose id or name is `which`; returns it. Unknown or ambiguous: LookupError."""
    entries = read_keys_file(path)
    found = [e for e in entries if which in (e.id, e.name)]
    if len(found) != 1:
        known = ", ".join(f"{e.id} ({e.name})" for e in entries) or "none"
        raise LookupError(f"{path}: {'no' if not found else 'more than one'} key with id or name {which!r} (keys: {known})")
    _write_keys_file(path, [e for e in entries if e is not found[0]])
    return found[0]


def _write_keys_file(path: Path, entries: list[KeyEntry]) -> None:
    """Written whole through a temporary file and a rename, so a reader (a running `serve`) never sees half a file."""
    head = "# Hashes only: add entries with `orchestrator keys new --name NAME [--client ID] --file THIS_FILE`.\n"
    body = yaml.safe_dump({"keys": [e.model_dump(exclude_none=True) for e in entries]}, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(head + body)
    tmp.chmod(0o600)
    tmp.replace(path)


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None


class KeyRing:
    """The keys a running API accepts. A keys file is re-read when it changes (looked at most once a second),
    so `orchestrator keys revoke` takes effect without a restart. Once auth is on it stays on: a file emptied
    or revoked down to nothing refuses every key, it never turns authentication off; a file that no longer
    loads keeps the keys read before (logged as an error)."""

    RECHECK_S = 1.0

    def __init__(self, entries: tuple[KeyEntry, ...] | list[KeyEntry], *, path: Path | None = None,
                 fixed: tuple[KeyEntry, ...] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.entries = tuple(entries)
        self._path, self._fixed, self._clock = path, fixed, clock
        self._stamp = _stamp(path)
        self._checked = clock()
        self._enabled = bool(self.entries)

    @property
    def enabled(self) -> bool:
        """No key configured at all (at start) means auth is off (the embedded local default)."""
        self._refresh()
        return self._enabled

    def verify(self, presented: str) -> KeyEntry | None:
        """The entry whose hash matches; every entry is compared, in constant time, with no early exit."""
        self._refresh()
        found: KeyEntry | None = None
        for entry in self.entries:
            if entry.matches(presented):
                found = entry
        return found

    def _refresh(self) -> None:
        now = self._clock()
        if self._path is None or now - self._checked < self.RECHECK_S:
            return
        self._checked = now
        stamp = _stamp(self._path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            from_file = read_keys_file(self._path)
        except ConfigFileError as exc:
            log.error("API keys file changed and cannot be read (%s); keeping the %d keys loaded before", exc, len(self.entries))
            return
        self.entries = (*from_file, *self._fixed)
        self._enabled = self._enabled or bool(self.entries)
        log.warning("API keys reloaded from %s: %d keys", self._path, len(self.entries))

    @classmethod
    def load(cls, *, path: Path | None, admin_key: SecretStr | None) -> "KeyRing":
        entries: list[KeyEntry] = []
        if path is not None:
            entries += read_keys_file(Path(path))
            legacy = [e.name for e in entries if e.sha256 is not None]
            if legacy:
                log.warning("API keys %s are stored as unsalted sha256; re-issue them with `orchestrator keys new`", ", ".join(legacy))
        fixed: tuple[KeyEntry, ...] = ()
        if admin_key is not None:  # ORCH_ADMIN_API_KEY: hashed on load, the plaintext is not kept
            problem = weakness(admin_key.get_secret_value())
            if problem:
                raise ValueError(f"ORCH_ADMIN_API_KEY {problem}; use e.g. `openssl rand -hex 32`")
            fixed = (KeyEntry(name="env-admin", role="admin", hash=salted_hash(admin_key.get_secret_value())),)
        return cls((*entries, *fixed), path=Path(path) if path is not None else None, fixed=fixed)


def new_entry(*, name: str, key: str, client_id: str | None) -> KeyEntry:
    return KeyEntry(name=name, role="client" if client_id else "admin", client_id=client_id, hash=salted_hash(key))


def entry_yaml(*, name: str, key: str, client_id: str | None) -> str:
    """The keys-file entry for a freshly generated key (what `orchestrator keys new` prints)."""
    entry = new_entry(name=name, key=key, client_id=client_id)
    return yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False)


class FailureThrottle:
    """Wrong API keys per source: after `max_failures` in `window_s`, that source waits out the window.

    Memory is bounded: at most `max_sources` sources are remembered (least recently failing forgotten).
    """

    def __init__(self, *, max_failures: int = 20, window_s: float = 60.0, max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max, self._window, self._cap, self._clock = max_failures, window_s, max_sources, clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # source -> (window start, failures)

    def retry_after(self, source: str) -> float | None:
        """Seconds this source must wait before its key is even checked; None when it may try."""
        entry = self._seen.get(source)
        if entry is None:
            return None
        left = entry[0] + self._window - self._clock()
        if left <= 0:
            del self._seen[source]
            return None
        return left if entry[1] >= self._max else None

    def failed(self, source: str) -> None:
        now = self._clock()
        start, count = self._seen.pop(source, (now, 0))
        if now - start > self._window:
            start, count = now, 0
        self._seen[source] = (start, count + 1)
        while len(self._seen) > self._cap:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)

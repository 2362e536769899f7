"""Envelope encryption of per-client secrets at rest: AES-GCM data keys wrapped under rotatable master keys.

Each client has its own random data key (DEK). Secret columns are sealed with the DEK and
associated data naming the client, the column and the destination the secret is sent to (the
LiveKit or Supabase URL), so a ciphertext copied to another client's row or another column, or a
row whose URL was re-pointed elsewhere, fails to open. Values sealed before destinations were
bound (`v1:`) open only when the caller allows it (an upgrade window; `tenants rewrap` binds them). The DEK is stored wrapped under a master key (KEK) that
lives outside the database (settings), tagged with the master key's id so master keys can be
rotated: old rows stay readable while their key id is still configured, and `rewrap` moves
them to the current key without touching the sealed columns.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"  # the wrapped data key's format, and sealed values from before destinations were bound
SEALED = "v2"  # sealed values bound to (client, column, destination)
_NONCE = 12
_KEY_BYTES = 32
_KEY_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class CredentialError(Exception):
    """A value cannot be sealed or opened; the message never contains key material or plaintext."""


def _ad(client_id: str, purpose: str) -> bytes:
    # Length-prefixed so no (client, purpose) pair can be spelled as another.
    return f"agent-orchestrator/{VERSION}|{len(client_id)}:{client_id}|{purpose}".encode()


def _bound_ad(client_id: str, column: str, destination: str | None) -> bytes:
    dest = normalise_destination(destination)
    return f"agent-orchestrator/{SEALED}|{len(client_id)}:{client_id}|column:{len(column)}:{column}|dest:{len(dest)}:{dest}".encode()


def normalise_destination(url: str | None) -> str:
    """The form a destination is bound in: '' for none, else the URL without a trailing slash."""
    return (url or "").strip().rstrip("/")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError("ciphertext is not valid base64") from None


def parse_master_key(value: str) -> bytes:
    """A master key as configured: base64 of 32 random bytes (`openssl rand -base64 32`)."""
    key = _unb64(value.strip())
    if len(key) != _KEY_BYTES:
        raise CredentialError(f"a master key must be {_KEY_BYTES} bytes (base64 of `openssl rand -base64 32`)")
    return key


@dataclass(frozen=True)
class MasterKeys:
    """The key ring: every master key still needed to read old rows, and the one new rows use."""

    keys: dict[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise CredentialError(f"current master key id {self.current!r} is not among the configured ids {sorted(self.keys)}")
        for kid, key in self.keys.items():
            if not kid or not set(kid) <= _KEY_ID_CHARS or len(key) != _KEY_BYTES:
                raise CredentialError(f"master key {kid!r} must have an id of [A-Za-z0-9._-] and {_KEY_BYTES} bytes")

    def __repr__(self) -> str:  # never print key material
        return f"MasterKeys(ids={sorted(self.keys)}, current={self.current!r})"


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _seal(key: bytes, plaintext: bytes, ad: bytes) -> str:
    nonce = os.urandom(_NONCE)
    return _b64(nonce + AESGCM(key).encrypt(nonce, plaintext, ad))


def _open(key: bytes, token: str, ad: bytes, what: str) -> bytes:
    raw = _unb64(token)
    if len(raw) < _NONCE + 16:
        raise CredentialError(f"{what}: ciphertext too short")
    try:
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], ad)
    except InvalidTag:
        raise CredentialError(f"{what}: does not decrypt for this client and column (moved, altered or wrong key)") from None


def wrap_data_key(keys: MasterKeys, *, client_id: str, data_key: bytes) -> str:
    """`v1:<master key id>:<base64 nonce+ciphertext>` under the current master key."""
    return f"{VERSION}:{keys.current}:{_seal(keys.keys[keys.current], data_key, _ad(client_id, 'data-key'))}"


def unwrap_data_key(keys: MasterKeys, *, client_id: str, wrapped: str) -> bytes:
    version, _, rest = wrapped.partition(":")
    kid, _, token = rest.partition(":")
    if version != VERSION or not kid or not token:
        raise CredentialError(f"client {client_id}: data key is not in the {VERSION}:<key id>:<ciphertext> format")
    if kid not in keys.keys:
        raise CredentialError(f"client {client_id}: data key is wrapped under master key {kid!r}, which is not configured")
    return _open(keys.keys[kid], token, _ad(client_id, "data-key"), f"client {client_id} data key")


def rewrap_data_key(keys: MasterKeys, *, client_id: str, wrapped: str) -> str:
    """Rotation: the same data key, wrapped under the current master key (sealed columns unchanged)."""
    return wrap_data_key(keys, client_id=client_id, data_key=unwrap_data_key(keys, client_id=client_id, wrapped=wrapped))


def wrapped_key_id(wrapped: str) -> str:
    return wrapped.split(":", 2)[1] if wrapped.count(":") >= 2 else ""


def seal(data_key: bytes, *, client_id: str, column: str, plaintext: str, destination: str | None) -> str:
    """`v2:<base64>`: the value bound to this client, column and destination URL by the associated data."""
    return f"{SEALED}:{_seal(data_key, plaintext.encode(), _bound_ad(client_id, column, destination))}"


def is_bound(token: str) -> bool:
    return token.startswith(SEALED + ":")


def open_sealed(
    data_key: bytes, *, client_id: str, column: str, token: str, destination: str | None, allow_unbound: bool = False
) -> str:
    """The plaintext, if `token` was sealed for this client, column and destination.

    A `v1:` value (sealed before destinations were bound) opens only with `allow_unbound`.
    """
    version, _, body = token.partition(":")
    what = f"client {client_id} {column}"
    if version == SEALED and body:
        try:
            return _open(data_key, body, _bound_ad(client_id, column, destination), what).decode()
        except CredentialError:
            raise CredentialError(
                f"{what}: does not decrypt for this client, column and destination "
                "(URL changed, value moved or altered, or wrong key); re-enter it with `orchestrator tenants set-credentials`"
            ) from None
    if version == VERSION and body:
        if not allow_unbound:
            raise CredentialError(
                f"{what}: sealed before secrets were bound to their destination; run `orchestrator tenants rewrap` "
                "(with ORCH_ALLOW_UNBOUND_SECRETS=true for that upgrade only)"
            )
        return _open(data_key, body, _ad(client_id, "column:" + column), what).decode()
    raise CredentialError(f"{what}: not a {SEALED} ciphertext")

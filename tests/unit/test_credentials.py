"""Envelope encryption rules: binding to client and column, rotation by master key id, no key material in reprs."""

from __future__ import annotations

import os

import pytest

from orchestrator.tenants.credentials import (
    CredentialError,
    MasterKeys,
    new_data_key,
    open_sealed,
    parse_master_key,
    rewrap_data_key,
    seal,
    unwrap_data_key,
    wrap_data_key,
    wrapped_key_id,
)
from orchestrator.tenants.records import client_changes

K1, K2 = os.urandom(32), os.urandom(32)


def test_seal_round_trip_and_fresh_nonce() -> None:
    dek = new_data_key()
    a = seal(dek, client_id="c1", column="livekit_api_secret", plaintext="s3cret", destination="wss://lk.example")
    b = seal(dek, client_id="c1", column="livekit_api_secret", plaintext="s3cret", destination="wss://lk.example")
    assert a != b and a.startswith("v2:") and "s3cret" not in a
    assert open_sealed(dek, client_id="c1", column="livekit_api_secret", token=a, destination="wss://lk.example") == "s3cret"


@pytest.mark.parametrize(
    ("client_id", "column"),
    [("c2", "livekit_api_secret"), ("c1", "supabase_service_key"), ("c", "1livekit_api_secret"), ("", "livekit_api_secret")],
)
def test_moved_ciphertext_does_not_open(client_id: str, column: str) -> None:
    dek = new_data_key()
    token = seal(dek, client_id="c1", column="livekit_api_secret", plaintext="s3cret", destination="wss://lk.example")
    with pytest.raises(CredentialError, match="does not decrypt"):
        open_sealed(dek, client_id=client_id, column=column, token=token, destination="wss://lk.example")


def test_wrapped_data_key_is_bound_to_its_client() -> None:
    keys = MasterKeys(keys={"k1": K1}, current="k1")
    wrapped = wrap_data_key(keys, client_id="c1", data_key=new_data_key())
    with pytest.raises(CredentialError, match="does not decrypt"):
        unwrap_data_key(keys, client_id="c2", wrapped=wrapped)


def test_rotation_keeps_old_rows_readable_then_rewrap_retires_the_old_key() -> None:
    old = MasterKeys(keys={"k1": K1}, current="k1")
    dek = new_data_key()
    wrapped = wrap_data_key(old, client_id="c1", data_key=dek)
    token = seal(dek, client_id="c1", column="livekit_api_secret", plaintext="s3cret", destination="wss://lk.example")

    both = MasterKeys(keys={"k1": K1, "k2": K2}, current="k2")
    assert unwrap_data_key(both, client_id="c1", wrapped=wrapped) == dek  # old row, new key ring
    rewrapped = rewrap_data_key(both, client_id="c1", wrapped=wrapped)
    assert wrapped_key_id(wrapped) == "k1" and wrapped_key_id(rewrapped) == "k2"

    only_new = MasterKeys(keys={"k2": K2}, current="k2")
    dek2 = unwrap_data_key(only_new, client_id="c1", wrapped=rewrapped)
    assert open_sealed(dek2, client_id="c1", column="livekit_api_secret", token=token, destination="wss://lk.example") == "s3cret"
    with pytest.raises(CredentialError, match="master key 'k1', which is not configured"):
        unwrap_data_key(only_new, client_id="c1", wrapped=wrapped)


@pytest.mark.parametrize("bad", ["", "v1:k1", "v2:k1:AAAA", "v1:k1:not base64!", "v1:k1:AAAA"])
def test_malformed_wrapped_keys_are_refused(bad: str) -> None:
    with pytest.raises(CredentialError):
        unwrap_data_key(MasterKeys(keys={"k1": K1}, current="k1"), client_id="c1", wrapped=bad)


def test_key_ring_validation_and_repr() -> None:
    with pytest.raises(CredentialError, match="current master key id"):
        MasterKeys(keys={"k1": K1}, current="k2")
    with pytest.raises(CredentialError, match="32 bytes"):
        parse_master_key("c2hvcnQ=")
    assert K1.hex() not in repr(MasterKeys(keys={"k1": K1}, current="k1"))


def test_client_changes_reuse_the_data_key_so_untouched_secrets_stay_readable() -> None:
    keys = MasterKeys(keys={"k1": K1}, current="k1")
    plain = {"name": "C", "livekit_url": "wss://lk.example", "supabase_url": "https://sb.example"}
    first = client_changes(keys, client_id="c1", existing=None,
                           secrets={"livekit_api_secret": "a", "supabase_service_key": "b"}, plain=plain)
    second = client_changes(keys, client_id="c1", existing={**plain, "data_key": first["data_key"]},
                            secrets={"livekit_api_secret": "a2"}, plain={})
    dek = unwrap_data_key(keys, client_id="c1", wrapped=second["data_key"])
    assert open_sealed(dek, client_id="c1", column="supabase_service_key", token=first["supabase_service_key"],
                       destination="https://sb.example") == "b"
    assert open_sealed(dek, client_id="c1", column="livekit_api_secret", token=second["livekit_api_secret"], destination="wss://lk.example") == "a2"
    with pytest.raises(ValueError):
        client_changes(keys, client_id="c1", existing=None, secrets={"name": "x"}, plain={})
    with pytest.raises(ValueError, match="needs livekit_api_secret again"):  # a URL moves only with its secret
        client_changes(keys, client_id="c1", existing={**plain, "data_key": first["data_key"]}, secrets={},
                       plain={"livekit_url": "wss://elsewhere.example"})


@pytest.mark.parametrize("destination,opens", [
    ("wss://lk.example", True), ("wss://lk.example/", True), ("wss://lk.example.evil", False), ("wss://evil.example", False), ("", False), (None, False),
])
def test_sealed_value_opens_only_for_its_destination(destination: str | None, opens: bool) -> None:
    dek = new_data_key()
    token = seal(dek, client_id="c1", column="livekit_api_secret", plaintext="s3cret", destination="wss://lk.example")
    if opens:
        assert open_sealed(dek, client_id="c1", column="livekit_api_secret", token=token, destination=destination) == "s3cret"
    else:
        with pytest.raises(CredentialError, match="destination"):
            open_sealed(dek, client_id="c1", column="livekit_api_secret", token=token, destination=destination)


def test_unbound_v1_values_open_only_when_allowed() -> None:
    from orchestrator.tenants.credentials import _ad, _seal

    dek = new_data_key()
    legacy = "v1:" + _seal(dek, b"s3cret", _ad("c1", "column:livekit_api_secret"))
    with pytest.raises(CredentialError, match="rewrap"):
        open_sealed(dek, client_id="c1", column="livekit_api_secret", token=legacy, destination="wss://lk.example")
    assert open_sealed(dek, client_id="c1", column="livekit_api_secret", token=legacy, destination="wss://lk.example", allow_unbound=True) == "s3cret"

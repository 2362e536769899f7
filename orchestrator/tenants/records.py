"""Pure builders of the platform `clients` rows: every secret sealed, the data key wrapped (no I/O)."""

from __future__ import annotations

from typing import Any

from ..credentials import MasterKeys, new_data_key, seal, unwrap_data_key, wrap_data_key

SECRET_COLUMNS = ("livekit_api_secret", "supabase_service_key", "llm_api_key")


def client_changes(
    keys: MasterKeys,
    *,
    client_id: str,
    existing_data_key: str | None,
    secrets: dict[str, str],
    plain: dict[str, Any],
) -> dict[str, Any]:
    """The columns to write for a client: `plain` as given, `secrets` sealed under the client's data key.

    An existing client keeps its data key (re-wrapped under the current master key), so a
    secret not being changed stays readable; a new client gets a fresh random data key.
    """
    unknown = set(secrets) - set(SECRET_COLUMNS)
    if unknown:
        raise ValueError(f"not secret columns: {sorted(unknown)}")
    data_key = unwrap_data_key(keys, client_id=client_id, wrapped=existing_data_key) if existing_data_key else new_data_key()
    row: dict[str, Any] = {"id": client_id, **plain, "data_key": wrap_data_key(keys, client_id=client_id, data_key=data_key)}
    for column, value in secrets.items():
        row[column] = seal(data_key, client_id=client_id, column=column, plaintext=value)
    return row

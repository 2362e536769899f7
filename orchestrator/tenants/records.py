"""Pure builders of the platform `clients` rows: every secret sealed, the data key wrapped (no I/O)."""

from __future__ import annotations

from typing import Any

from orchestrator.tenants.credentials import MasterKeys, new_data_key, seal, unwrap_data_key, wrap_data_key

SECRET_COLUMNS = ("livekit_api_secret", "supabase_service_key", "llm_api_key")
# Where each secret is sent: it is sealed bound to that URL, so re-pointing the URL opens nothing.
DESTINATION = {"livekit_api_secret": "livekit_url", "supabase_service_key": "supabase_url"}


def client_changes(
    keys: MasterKeys,
    *,
    client_id: str,
    existing: dict[str, Any] | None,
    secrets: dict[str, str],
    plain: dict[str, Any],
) -> dict[str, Any]:
    """The columns to write for a client: `plain` as given, `secrets` sealed under the client's data key.

    `existing` is the client's current row (data_key and the URL columns), None for a new client.
    An existing client keeps its data key (re-wrapped under the current master key), so a
    secret not being changed stays readable; a new client gets a fresh random data key. A URL may
    change only together with the secret bound to it (that secret must be entered again).
    """
    unknown = set(secrets) - set(SECRET_COLUMNS)
    if unknown:
        raise ValueError(f"not secret columns: {sorted(unknown)}")
    for column, url_column in DESTINATION.items():
        if url_column in plain and existing is not None and plain[url_column] != existing.get(url_column) \
                and column not in secrets and plain.get(column, "") is not None:
            raise ValueError(f"changing {url_column} needs {column} again: it is sealed for the old {url_column}")
    data_key = unwrap_data_key(keys, client_id=client_id, wrapped=existing["data_key"]) if existing else new_data_key()
    row: dict[str, Any] = {"id": client_id, **plain, "data_key": wrap_data_key(keys, client_id=client_id, data_key=data_key)}
    merged = {**(existing or {}), **plain}
    for column, value in secrets.items():
        destination = merged.get(DESTINATION[column]) if column in DESTINATION else None
        row[column] = seal(data_key, client_id=client_id, column=column, plaintext=value, destination=destination)
    return row

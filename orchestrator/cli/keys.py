"""`orchestrator keys new | list | revoke`: the API keys a deployment accepts, kept as salted hashes in one file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from orchestrator.core.apikeys import add_to_keys_file, entry_yaml, generate, new_entry, read_keys_file, remove_from_keys_file
from orchestrator.cli.failures import USAGE, fail
from orchestrator.cli.output import Rows, output_option

keys_app = typer.Typer(help="Orchestrator API keys (stored hashed; a running `serve` picks up changes within a second).",
                       no_args_is_help=True, rich_markup_mode=None)

FILE_HELP = "the keys file (default ORCH_API_KEYS_FILE)"


def _keys_file(file: Path | None) -> Path:
    path = file or (Path(os.environ["ORCH_API_KEYS_FILE"]) if os.environ.get("ORCH_API_KEYS_FILE") else None)
    if path is None:
        fail("no keys file: pass --file or set ORCH_API_KEYS_FILE", code=USAGE)
    return path


@keys_app.command("new")
def keys_new(
    name: str = typer.Option(..., help="who the key is for, e.g. autonomite-dashboard"),
    client_id: str = typer.Option(None, "--client", "--client-id", help="bind the key to one client; omit for an admin key"),
    file: Path = typer.Option(None, "--file", help="add the hashed entry to this keys file (created when missing)"),
) -> None:
    """Generate an API key: the key goes to stderr once; its hashed entry goes into --file (or to stdout).

    `--file deploy/config/api-keys.yaml` is the way to build the file ORCH_API_KEYS_FILE names: it creates
    the file or adds to it, and the result is always a file `serve` loads."""
    key = generate()
    if file is not None:
        add_to_keys_file(file, new_entry(name=name, key=key, client_id=client_id))
        typer.echo(f"API key (shown once, store it now): {key}", err=True)
        typer.echo(f"added {'client' if client_id else 'admin'} key {name!r} to {file}", err=True)
        return
    typer.echo(f"API key (shown once, store it now): {key}", err=True)
    typer.echo(entry_yaml(name=name, key=key, client_id=client_id), nl=False)


@keys_app.command("list")
def keys_list(
    file: Path = typer.Option(None, "--file", help=FILE_HELP, show_default=False),
    output: Rows = output_option(Rows.table),
) -> None:
    """List the keys in the keys file: id, name, role and client (never a key, never a hash)."""
    from orchestrator.cli.views import plain_table

    path = _keys_file(file)
    rows = [{"id": e.id, "name": e.name, "role": e.role, "client_id": e.client_id or "",
             "hash": "hmac-sha256" if e.hash else "sha256 (unsalted: re-issue)"} for e in read_keys_file(path)]
    if output == Rows.json:
        typer.echo(json.dumps(rows, indent=2))
    elif output == Rows.name:
        typer.echo("".join(f"{r['name']}\n" for r in rows), nl=False)
    else:
        typer.echo(plain_table(rows, ["id", "name", "role", "client_id", "hash"]))
    if os.environ.get("ORCH_ADMIN_API_KEY"):
        typer.echo("also: one admin key from ORCH_ADMIN_API_KEY (not in the file; unset it to revoke it)", err=True)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., metavar="ID", help="the key's id from `orchestrator keys list` (or its name)"),
    file: Path = typer.Option(None, "--file", help=FILE_HELP, show_default=False),
) -> None:
    """Remove a key from the keys file. A running `serve` refuses it within a second (it re-reads the file)."""
    path = _keys_file(file)
    try:
        gone = remove_from_keys_file(path, key_id)
    except LookupError as exc:
        fail(str(exc))
    typer.echo(f"revoked {gone.role} key {gone.name!r} (id {gone.id}) from {path}")

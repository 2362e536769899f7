"""The one `-o/--output` flag every printing command shares, with only the forms that command can print.

table: aligned columns for people · wide: more columns · json: for scripts · name: one name a line (for
`xargs`) · text: the one human line a command that acts prints. Click checks the value against the
command's own choices, so `-o yaml` is a usage error (exit 2) naming what is allowed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer


class Listing(StrEnum):
    """`ps`: the agents of a deployment."""

    table = "table"
    wide = "wide"
    json = "json"
    name = "name"


class Rows(StrEnum):
    """`config`, `keys list`: rows without a wide form."""

    table = "table"
    json = "json"
    name = "name"


class Outcome(StrEnum):
    """`trigger`, `close`: one line saying what was done, or the API's whole answer."""

    text = "text"
    json = "json"


def output_option(default: StrEnum) -> Any:
    choices = " | ".join(m.value for m in type(default))
    return typer.Option(default, "--output", "-o", help=f"output format: {choices}", case_sensitive=False)


def json_alias_option() -> Any:
    """`--json`, the older spelling of `-o json`: still read so existing scripts keep working, no longer shown."""
    return typer.Option(False, "--json", hidden=True, help="the same as -o json (older spelling)")

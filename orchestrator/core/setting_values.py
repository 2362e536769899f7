"""How settings fail and which values they refuse: placeholders pasted from templates, one safe line per failure."""

from __future__ import annotations

import re

from pydantic import ValidationError

# Values people paste from templates; refusing them at start-up beats a confusing 401 later.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "change_me", "replace-me", "todo", "xxx", "your-secret", "secret-here", "<secret>"})


def is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return not v or v in PLACEHOLDER_SECRETS or (v.startswith("<") and v.endswith(">")) or v.startswith(("your_", "your-"))


class SettingsProblem(ValueError):
    """Settings cannot be built; the message names the variables and the problems, never their values."""


def settings_error_line(exc: Exception) -> str:
    """One line for a settings failure. Pydantic's own text prints `input_value` (the whole settings
    dict for a model check, secrets included), so only the variable names and the rule are kept."""
    if isinstance(exc, ValidationError):
        problems = []
        for e in exc.errors(include_input=False, include_url=False):
            loc = [str(p) for p in e.get("loc", ()) if p != "__root__"]
            name = f"ORCH_{loc[0].upper()}" if loc else ""
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        return "invalid settings: " + "; ".join(problems)
    field = getattr(exc, "args", [""])[0]
    match = re.search(r'field "([a-z_]+)"', str(field))
    if match:
        return f"invalid settings: ORCH_{match.group(1).upper()}: cannot be parsed (complex values are JSON)"
    return f"invalid settings: {type(exc).__name__}"

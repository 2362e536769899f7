"""Loading the YAML files a deployment is configured with (API keys, tenants): one-line errors naming file and problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A configuration file is missing, unreadable, not YAML or not valid: `serve` prints it as one line."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def validation_summary(exc: ValidationError, *, limit: int = 3) -> str:
    """Pydantic's errors as `where: what` pairs on one line, without echoing the input (it may hold a secret)."""
    parts = []
    for e in exc.errors()[:limit]:
        where = ".".join(str(p) for p in e.get("loc", ())) or "top level"
        parts.append(f"{where}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigFileError(path, "no such file") from None
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigFileError(path, f"not valid YAML{where}: {problem}") from None


def load_model(path: Path, model: type[M], data: Any) -> M:
    """Validate already-read data against `model`, as a ConfigFileError naming the file."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(path, validation_summary(exc)) from None

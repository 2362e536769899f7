"""How the CLI fails: one line on stderr and a documented exit code, never a traceback for an expected failure.

Exit codes (README, "The command line"): 0 done; 1 refused or failed (a 4xx from the API, nothing matched, an action
failed); 2 bad usage or configuration (settings, keys or tenants file); 3 a dependency is unavailable (the
Docker engine, the orchestrator API unreachable or answering 503). `reconcile --once` keeps its own cron codes.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from orchestrator.core.config_files import ConfigFileError
from orchestrator.core.errors import ConfigurationError, DependencyUnavailable, OrchestratorError, TemporaryError
from orchestrator.settings import Settings, SettingsProblem
from orchestrator.cli.hints import engine_down

OK, FAILED, USAGE, UNAVAILABLE = 0, 1, 2, 3


class CliFailure(Exception):
    """An expected failure: its message is the whole story."""

    def __init__(self, message: str, *, code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, *, code: int = FAILED) -> NoReturn:
    raise CliFailure(message, code=code)


def settings_problem(exc: ValidationError) -> str:
    """Pydantic's settings errors with the variable names an operator sets (ORCH_PORT, not `port`)."""
    parts = []
    for e in exc.errors()[:3]:
        loc = [str(p) for p in e.get("loc", ())]
        where = ("ORCH_" + loc[0].upper() + "".join(f"[{p}]" for p in loc[1:])) if loc else "settings"
        parts.append(f"{where}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts)


def unavailable(exc: OrchestratorError) -> str:
    """The line for a dependency that is down: an engine that did not answer at all gets the plain cause and a
    hint instead of the client library's text; one that answered (a 5xx) keeps its own words."""
    if isinstance(exc, DependencyUnavailable) and exc.dependency in ("docker", "kubernetes") \
            and "upstream_status" not in exc.details:
        return engine_down(exc.dependency, exc.message)
    return exc.message


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an expected failure; None for a bug (which keeps its traceback)."""
    match exc:
        case CliFailure():
            return exc.message, exc.code
        case ConfigFileError():
            return f"bad configuration file {exc}", USAGE
        case SettingsProblem():
            return str(exc), USAGE
        case ConfigurationError():
            return f"invalid settings: {exc}", USAGE
        case ValidationError():
            return f"invalid settings: {settings_problem(exc)}", USAGE
        case TemporaryError():
            return unavailable(exc), UNAVAILABLE
        case OrchestratorError():
            return exc.message, FAILED
    return None


def load_settings() -> Settings:
    """Settings, or one line naming the variables (never their values) and exit 2, also outside GuardedTyper."""
    try:
        return Settings.load()
    except SettingsProblem as exc:
        typer.echo(f"orchestrator: {exc}", err=True)
        raise typer.Exit(USAGE) from None


class GuardedTyper(typer.Typer):
    """A Typer app whose expected failures end as one line on stderr and an exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            found = explain(exc)
            if found is None:
                raise
            message, code = found
            typer.echo(f"orchestrator: {message}", err=True)
            sys.exit(code)

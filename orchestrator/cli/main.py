"""`orchestrator serve | reconcile | config | ps | logs | close | trigger | tenants | keys`: the command line.

Human output by default, `-o json` for scripts; expected failures are one line and an exit code
(orchestrator/cli/failures.py), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import warnings

import typer

from orchestrator import __version__
from orchestrator.rules.isolation import api_reachable_by_agents
from orchestrator.core.logs import configure as configure_logging

from orchestrator.cli import agents
from orchestrator.cli.trace import trace
from orchestrator.cli.failures import USAGE, GuardedTyper, fail, load_settings
from orchestrator.cli.keys import keys_app
from orchestrator.cli.output import Rows, output_option
from orchestrator.cli.tenants import tenants_app

# Dev keys are short on purpose; PyJWT's InsecureKeyLengthWarning about them would land in every cron mail.
# Matched by message, so the CLI does not import PyJWT (and cryptography) just to silence it.
warnings.filterwarnings("ignore", message=r"The HMAC key is \d+ bytes long, which is below the minimum recommended length")

app = GuardedTyper(
    help="Runs LiveKit agents as one Docker container per (client, agent, room).",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,  # plain text: help and usage errors read in a cron mail
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command and sub-command
)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
agents.register(app)
app.command()(trace)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orchestrator {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
) -> None:
    """Runs LiveKit agents as one Docker container per (client, agent, room)."""


def main() -> None:
    app()


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default ORCH_HOST, 127.0.0.1); not loopback only with API keys"),
    port: int = typer.Option(None, help="port (default ORCH_PORT, 8000)"),
) -> None:
    """Run the HTTP API (trigger-agent, health, docs at /docs). A bad keys or tenants file is one line, exit 2."""
    from api.app import create_app
    from api.serving import run

    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    bind = host or settings.host
    application = create_app(settings)
    if not application.state.api_keys.enabled and not is_loopback(bind):
        fail(f"refusing to bind {bind}: no API keys are configured, so auth is disabled. Configure "
             "ORCH_API_KEYS_FILE or ORCH_ADMIN_API_KEY, or bind 127.0.0.1.", code=USAGE)
    agent_network = application.state.engine.networks.configured
    if not application.state.api_keys.enabled and api_reachable_by_agents(bind, agent_network=agent_network):
        fail(f"refusing to serve on {bind} without API keys: agent containers run on the host network "
             "(ORCH_AGENT_NETWORK=host) and reach the host's loopback, so any agent could call this API. "
             "Configure ORCH_API_KEYS_FILE or ORCH_ADMIN_API_KEY, or leave ORCH_AGENT_NETWORK unset.", code=USAGE)
    run(application, host=bind, port=port or settings.port)


@app.command()
def network(
    remove: bool = typer.Option(False, "--remove", help="Remove the agents' network and its host filter (no agents may be left on it)."),
    remove_filter: bool = typer.Option(False, "--remove-filter", help="Remove only the host filter (agents then reach every host service)."),
) -> None:
    """Make sure the agents' network and its host filter exist (as `serve` does at start) and print them as JSON.

    `scripts/dev` reads the gateway from it to bind its LiveKit server where agents can reach it."""
    from orchestrator.runtime import HostFilter
    from orchestrator.runtime.factory import runtime_from_settings
    from orchestrator.services.agent_networks import AgentNetworks

    settings = load_settings()
    runtime = runtime_from_settings(settings)

    async def go() -> dict[str, object]:
        nets = AgentNetworks(settings=settings.model_copy(update={"agent_host_filter": settings.agent_host_filter and not (remove or remove_filter)}),
                             provider=runtime)
        net = await nets.for_client(None)
        row: dict[str, object] = {"name": net.name, "subnet": net.subnet, "gateway": net.gateway, "bridge": net.bridge}
        if not (isinstance(runtime, HostFilter) and net.managed):
            row["host_filter"] = None  # host network, an operator's own network, or an engine without one
            return row
        if remove or remove_filter:
            row["host_filter_removed"] = await runtime.remove_host_filter(net)
        if remove:
            await runtime.remove_network(net)
            row["removed"] = True
        elif not settings.agent_host_filter:
            row["host_filter"] = "off (ORCH_AGENT_HOST_FILTER=false)"
            return row
        row["host_filter"] = await runtime.host_filter_status(net)
        return row

    try:
        row = asyncio.run(go())  # engine and iptables refusals: GuardedTyper prints them as one line with a hint
    finally:
        runtime.close()
    typer.echo(json.dumps(row))


def is_loopback(host: str) -> bool:
    """Only loopback may serve without keys; `0.0.0.0`, `::` and names other than localhost may not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def config(output: Rows = output_option(Rows.table)) -> None:
    """List every setting: its variable, default and current value (secrets masked)."""
    from orchestrator.cli.reference import current_rows
    from orchestrator.cli.views import plain_table

    rows = current_rows(load_settings())
    if output == Rows.json:
        typer.echo(json.dumps(rows, indent=2))
    elif output == Rows.name:
        typer.echo("".join(f"{r['variable']}\n" for r in rows), nl=False)
    else:
        typer.echo(plain_table(rows, ["variable", "value", "default", "source"]))


@app.command()
def reconcile(
    once: bool = typer.Option(False, "--once", help="run one pass and exit (cron mode)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
) -> None:
    """Keep Docker equal to what should exist. --once prints a JSON summary; exit 0 ok, 1 some
    action failed (or part of LiveKit/tenants unobservable), 2 Docker could not be observed."""
    from orchestrator.composition import Orchestrator
    from orchestrator.core.errors import ConfigurationError

    settings = load_settings()
    configure_logging(fmt=settings.log_format, level="WARNING")

    async def run() -> int:
        async with Orchestrator.running(settings, loops=False) as engine:
            if not once and not dry_run:
                await engine.reconciler.run_forever()  # without HTTP: no webhooks, observation only
            report = await engine.reconciler.run_once(dry_run=dry_run)
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return report.exit_code

    try:
        code = asyncio.run(run())
    except ConfigurationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(USAGE) from None
    raise typer.Exit(code)


if __name__ == "__main__":
    main()

"""Every command the README documents exists as written: CLI lines parse, scripts and test paths exist, the
per-tenant compose commands give a valid compose file. tests/integration/test_readme_commands.py then runs the
per-tenant deployment's blocks for real.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^ *```[a-z]*\n(.*?)^ *```", TEXT, flags=re.MULTILINE | re.DOTALL)
CODE = "\n".join(re.sub(r"\\\n\s*", "", b) for b in BLOCKS)  # continuation lines joined

# Paths an operator or a run makes (the README tells you to create them); everything else must exist.
MADE_BY_YOU = re.compile(r"^(deploy/acme|deploy/tenant\.env$|deploy/config/api-keys\.yaml|tests/screenshots/|bench-results/tmp/)")
PATH = re.compile(r"(?<![\w/.$-])((?:orchestrator|api|agent_image|devtools|bench|bench-results|scripts|deploy|migrations|tests)"
                  r"/[\w./@-]*+)(?![{*])")  # possessive: `dispatch.{md,json}` and `002_*.sql` are patterns, not paths


def _segments(line: str) -> list[str]:
    """The commands a shell line runs: comments dropped, split at pipes, `&&`, `;` and `$(`."""
    line = re.sub(r"(^|\s)#.*$", "", line)
    return [seg.strip() for seg in re.split(r"\||&&|;|\$\(", line) if seg.strip()]


def cli_lines() -> list[str]:
    """The arguments of every `orchestrator …` a README code block runs (after `$ `, VAR=value, `.venv/bin/`, or
    as the command of `docker run … IMAGE orchestrator …`)."""
    found = set()
    for line in CODE.splitlines():
        for seg in _segments(line):
            try:
                words = shlex.split(seg.removeprefix("$ "))
            except ValueError:
                continue
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                words = words[1:]  # VAR=value before the command
            if words[:2] == ["docker", "run"] and "orchestrator" in words[2:]:
                words = words[words.index("orchestrator", 2):]
            if words and words[0] in ("orchestrator", ".venv/bin/orchestrator") and len(words) > 1:
                found.add(shlex.join(words[1:]))
    return sorted(found)


def parse(command: Any, args: list[str], name: str = "orchestrator", parent: Any = None) -> None:
    """What the console script does with these arguments, short of running the command."""
    ctx = command.make_context(name, list(args), parent=parent)
    if hasattr(command, "commands"):
        rest = list(getattr(ctx, "_protected_args", []) or getattr(ctx, "protected_args", [])) + list(ctx.args)
        sub_name, sub, rest = command.resolve_command(ctx, rest)
        parse(sub, rest, sub_name, ctx)


def test_the_readme_documents_the_cli() -> None:
    assert len(cli_lines()) >= 12, cli_lines()


@pytest.mark.parametrize("line", cli_lines())
def test_every_documented_cli_line_parses(line: str) -> None:
    parse(typer.main.get_command(app), shlex.split(line))


def test_the_parser_refuses_what_does_not_exist() -> None:
    with pytest.raises(Exception, match="No such option"):
        parse(typer.main.get_command(app), ["ps", "--format", "json"])  # the old flag: -o/--output now


def test_documented_paths_exist() -> None:
    missing = sorted({p.rstrip("/.") for p in PATH.findall(TEXT) if not MADE_BY_YOU.match(p) and not (ROOT / p.rstrip("/.")).exists()})
    assert not missing, f"README.md names paths that are not in the tree: {missing}"


def test_documented_scripts_are_executable() -> None:
    scripts = set(re.findall(r"(?<![\w/])scripts/([\w.-]+)", TEXT))
    broken = [s for s in scripts if not os.access(ROOT / "scripts" / s, os.X_OK)]
    assert scripts and not broken, broken


def test_documented_python_modules_exist() -> None:
    modules = set(re.findall(r"python3? -m ([\w.]*\w)\b(?!\.<)", TEXT)) - {"pytest", "venv"}
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert modules and not missing, missing


def test_documented_test_paths_exist() -> None:
    paths = {p for line in re.findall(r"-m pytest ([^\n`]*)", CODE) for p in line.split() if p.startswith("tests/")}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert paths and not missing, missing


# ---- the per-tenant compose commands, as written, against docker-compose's own reading of the file ----------------

needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (scripts/provision)")


def compose_commands() -> list[tuple[str, dict[str, str]]]:
    """Each documented `docker-compose -p …` line with the variables its block exports before it."""
    found = []
    for block in BLOCKS:
        exported: dict[str, str] = {}
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line.startswith("export "):
                exported |= dict(w.split("=", 1) for w in shlex.split(line)[1:])
            elif "docker-compose -p " in line:
                found.append((line, dict(exported)))
    return found


def compose_config(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The documented command with its compose verb replaced by `config`: the file as compose reads it, nothing run."""
    as_config = re.sub(r"docker-compose -p (\S+) .*$", r"docker-compose -p \1 config", command)
    return subprocess.run(["bash", "-c", as_config], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def checkout(tmp_path: Path) -> Path:
    """What the commands read from the repository root, and the files the README's step 2 makes."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / "deploy" / "acme").mkdir(parents=True)
    for f in ("tenant.env.example", "livekit.yaml"):
        shutil.copy(ROOT / "deploy" / f, tmp_path / "deploy")
    shutil.copy(ROOT / "deploy" / "tenant.env.example", tmp_path / "deploy" / "acme.env")
    return tmp_path


OPERATOR = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}


def test_the_readme_documents_start_upgrade_and_down() -> None:
    verbs = [re.search(r"docker-compose -p \S+ (\w+)", line).group(1) for line, _ in compose_commands()]  # type: ignore[union-attr]
    assert verbs.count("up") >= 3 and "down" in verbs, verbs


@needs_compose
@pytest.mark.parametrize(("command", "exported"), compose_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_compose_command_reads_the_file(tmp_path: Path, command: str, exported: dict[str, str]) -> None:
    done = compose_config(command, checkout(tmp_path), {**OPERATOR, **exported})
    assert done.returncode == 0, done.stderr  # `ORCH_CONFIG_DIR=deploy/acme` failed here: "Named volume … no declaration"
    if "ORCH_CONFIG_DIR" in command + str(exported):
        assert f"{tmp_path}/deploy/acme:/etc/orchestrator:ro" in done.stdout and "ORCH_SCOPE: acme" in done.stdout


@needs_compose
def test_the_compose_check_sees_a_relative_path_without_dot_slash(tmp_path: Path) -> None:
    """The check above can fail: the form the README used to show is refused by docker-compose 1.29."""
    done = compose_config("ORCH_SCOPE=acme ORCH_ENV_FILE=deploy/acme.env ORCH_CONFIG_DIR=deploy/acme docker-compose -p orch-acme up -d",
                          checkout(tmp_path), OPERATOR)
    assert done.returncode != 0 and "deploy/acme" in done.stderr

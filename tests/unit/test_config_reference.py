"""The README's configuration reference is generated from the settings model and may not drift from it."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cli.reference import readme_block, reference_markdown, setting_docs
from orchestrator.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_a_description() -> None:
    undocumented = [d.variable for d in setting_docs() if not d.description]
    assert not undocumented, f"describe these in orchestrator/cli/reference.py (or Field(description=...)): {undocumented}"


def test_readme_reference_matches_the_settings_model() -> None:
    block = readme_block(README.read_text())
    assert block is not None, "README.md lost its config-reference markers"
    assert block == reference_markdown(), "README.md's configuration reference is stale: run scripts/config-reference"


def test_the_reference_names_every_variable_once() -> None:
    text = reference_markdown()
    for name in Settings.model_fields:
        assert text.count(f"| `ORCH_{name.upper()}` |") == 1, name
    assert "changeme" not in text  # defaults only, never a secret

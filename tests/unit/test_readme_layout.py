"""The README's "Layout" section is the tree: generated from it, and compared with it here."""

from __future__ import annotations

from pathlib import Path

from devtools.layout import START, layout, readme_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_layout_is_the_tree() -> None:
    block = readme_block(README.read_text())
    assert block is not None, f"README.md lost its layout markers ({START})"
    assert block == layout(), "README.md's layout is not the tree: run scripts/layout (and give a new package a docstring)"


def test_every_package_says_what_it_holds() -> None:
    assert "(say what it holds" not in layout(), "a package without a docstring in its __init__.py (or an entry in WHAT)"


def test_the_layout_sees_a_new_module(tmp_path: Path) -> None:
    """The check can fail: a module the README does not list changes the generated tree."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    pkg = tmp_path / "orchestrator" / "rules"
    pkg.mkdir(parents=True)
    (tmp_path / "orchestrator" / "__init__.py").write_text('"""The product."""\n')
    (pkg / "__init__.py").write_text('"""Pure rules."""\n')
    (pkg / "naming.py").write_text("")
    before = layout(tmp_path)
    (pkg / "pricing.py").write_text("")
    after = layout(tmp_path)
    assert "naming" in before and "pricing" not in before and "naming pricing" in after

"""The project installs as a package (``make`` runs ``pip install -e . --no-deps``): only engine/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_only_the_engine_is_packaged_and_every_engine_folder_is_found() -> None:
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["build-system"]["build-backend"] == "setuptools.build_meta"
    find = config["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ())))
    code_dirs = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "engine").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert found == code_dirs, code_dirs ^ found  # a folder without __init__.py would be left out
    assert not {p for p in found if p.split(".")[0] in ("views", "tests", "bench", "docs")}


def test_make_installs_the_project_into_the_venv() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^\$\(VENV\)/\.runtime:(.*?)\n\n", makefile, re.S | re.M)
    assert target, "no $(VENV)/.runtime target"
    recipe = target.group(1)
    assert "pyproject.toml" in recipe.splitlines()[0]  # a changed package list reinstalls
    assert re.search(r"\$\(PIP\) install (--quiet )?-e \. --no-deps", recipe)
    assert recipe.index("-r requirements.txt") < recipe.index("-e .")

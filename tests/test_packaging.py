"""Every package folder is listed in pyproject (a missing one is silently dropped from the wheel)."""

from __future__ import annotations

import tomllib

from helpers import REPO


def test_every_subpackage_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for folder, package in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == set(config["packages"])


def test_templates_ship_as_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    templates = {p.relative_to(REPO / "templates").as_posix() for p in (REPO / "templates").rglob("*.j2")}
    patterns = config["ftc.templates"]
    import fnmatch

    assert all(any(fnmatch.fnmatch(t, pat) for pat in patterns) for t in templates), templates


def test_every_non_python_file_of_a_package_ships() -> None:
    """Stylesheets and templates beside the modules are package data, or the wheel lacks them."""
    import fnmatch

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = config["package-data"]
    missing = []
    for package, folder in ((k, v) for k, v in config["package-dir"].items()):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
                relative = path.relative_to(REPO / folder).as_posix()
                if not any(fnmatch.fnmatch(relative, pattern) for pattern in data.get(package, [])):
                    missing.append(f"{folder}/{relative}")
    assert not missing, missing

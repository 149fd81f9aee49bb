"""Files that ship with the bridge: the example config and the SQL migrations.

A wheel carries them inside the ``bridge`` package; a source checkout (editable install or
tests) has them at the top of the repository, which is where the design card keeps them.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _find(name: str) -> Traversable:
    packaged = files("bridge") / name
    if packaged.is_file() or packaged.is_dir():
        return packaged
    return _REPO_ROOT / name


def example_config() -> str:
    """The text of the shipped example-config.yaml."""
    return _find("example-config.yaml").read_text(encoding="utf-8")


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL text) of every ``NNN_name.sql`` migration, sorted by name."""
    folder = _find("migrations")
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )

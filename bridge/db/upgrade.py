"""Schema migrations from the top-level ``migrations/NNN_name.sql`` files.

Each file is one version, applied in its own transaction. The SQL is the same for SQLite and
PostgreSQL; statements end with ``;`` at the end of a line because aiosqlite runs one
statement per call.
"""

from __future__ import annotations

import re

from mautrix.util.async_db import Connection, Scheme, UpgradeTable
from mautrix.util.async_db.upgrade import Upgrade

from .. import resources

VERSION_TABLE = "bridge_version"
_FILE_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def split_statements(sql: str) -> list[str]:
    """The statements of a migration file, comments dropped."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [stmt.strip() for stmt in re.split(r";\s*$", code, flags=re.MULTILINE) if stmt.strip()]


def _upgrade_step(statements: list[str]) -> Upgrade:
    async def step(conn: Connection, _scheme: Scheme) -> None:
        for statement in statements:
            await conn.execute(statement)

    return step


def build_upgrade_table(up_to: int | None = None) -> UpgradeTable:
    """An upgrade table with every migration, or only the first ``up_to`` (for tests)."""
    table = UpgradeTable(version_table_name=VERSION_TABLE, database_name="bridge database")
    for expected, (name, sql) in enumerate(resources.migration_files(), start=1):
        match = _FILE_NAME.match(name)
        if not match or int(match.group(1)) != expected:
            raise RuntimeError(
                f"migration {name!r} breaks the NNN_name.sql sequence at {expected}"
            )
        if up_to is not None and expected > up_to:
            break
        table.register(_upgrade_step(split_statements(sql)), description=name)
    return table

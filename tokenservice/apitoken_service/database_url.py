"""User-facing database URLs mapped to SQLAlchemy's async drivers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url


class DatabaseUrlError(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseTarget:
    url: URL
    dialect: str  # "sqlite" or "postgresql"
    sqlite_path: Path | None

    def render_safe(self) -> str:
        """The URL without its password, fit for logs."""
        return self.url.render_as_string(hide_password=True)


def parse_database_url(raw: str) -> DatabaseTarget:
    try:
        url = make_url(raw)
    except Exception:
        raise DatabaseUrlError("database URL is not valid") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise DatabaseUrlError("use a SQLite file: sqlite:///path/file.db")
        path = Path(url.database)
        return DatabaseTarget(url.set(drivername="sqlite+aiosqlite"), "sqlite", path)
    if backend in ("postgresql", "postgres"):
        return DatabaseTarget(url.set(drivername="postgresql+asyncpg"), "postgresql", None)
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")

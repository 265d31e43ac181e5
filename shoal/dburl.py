"""Where the store lives: a SQLite file's path, or a PostgreSQL server's URL.

Kept apart from `shoal.store` (which imports SQLAlchemy) because the read-only commands and the
settings need to tell the two apart without paying for it.
"""

from __future__ import annotations

from pathlib import Path

SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def is_url(location: str | Path) -> bool:
    """Whether a `db_path` names a PostgreSQL server rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def sqlalchemy_url(url: str) -> str:
    """A postgresql:// URL as SQLAlchemy's psycopg 3 driver takes it."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


def libpq_url(url: str) -> str:
    """A postgresql:// URL as psycopg (and libpq) take it, without SQLAlchemy's driver name."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def redact_url(url: str) -> str:
    """A database URL fit to print: the password replaced."""
    scheme, rest = url.split("://", 1)
    if "@" in rest:
        credentials, host = rest.rsplit("@", 1)
        if ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url

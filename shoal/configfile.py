"""Finding and reading `shoal.toml`, and where the database is, without building the settings.

`shoal.config` validates the whole file into pydantic models; this module is the part of it that
needs none: which file is read (an explicit path, `SHOAL_CONFIG`, `./shoal.toml`, then the user's
config folder), the TOML in it, the environment's overrides, and `db_location`, the one setting
the read-only commands (`runs`, `show`, the review list, `heads`) need. They read it here because
pydantic's first model costs a process about 0.2 s, more than such a command may take to start.
`db_location` checks only `db_path`: a mistake elsewhere in the file is reported by every command
that builds the settings, not by one that only reads the database.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from platformdirs import user_config_path, user_data_path

from shoal.dburl import is_url
from shoal.errors import ConfigError


def find_config(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """The file the settings come from, first match wins; None when there is none (defaults)."""
    if path is not None:
        return Path(path).expanduser()
    if env.get("SHOAL_CONFIG"):
        return Path(env["SHOAL_CONFIG"]).expanduser()
    for candidate in (Path.cwd() / "shoal.toml", user_config_path("shoal") / "shoal.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_toml(found: Path) -> tuple[dict[str, Any], str]:
    """The file's data and its text (for line numbers in errors), or a `ConfigError` naming it."""
    try:
        text = found.read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except FileNotFoundError:
        raise ConfigError(f"config file {found} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {found} is not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {found} is not valid TOML: {exc}") from None


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """The environment's overrides, applied over the file's data."""
    if env.get("SHOAL_DB"):
        data["db_path"] = env["SHOAL_DB"]
    if env.get("SHOAL_DEFAULT_MODEL"):
        data["default_model"] = env["SHOAL_DEFAULT_MODEL"]
    if env.get("SHOAL_FRONTIER_MODEL"):
        data["frontier_model"] = env["SHOAL_FRONTIER_MODEL"]
    if env.get("OLLAMA_HOST"):
        data.setdefault("ollama", {})["host"] = normalise_host(env["OLLAMA_HOST"])
    if env.get("SHOAL_FRONTIER_BASE_URL"):
        data.setdefault("openai", {})["base_url"] = env["SHOAL_FRONTIER_BASE_URL"]


def normalise_host(host: str) -> str:
    """`OLLAMA_HOST` may be `0.0.0.0`, `host:port` or a URL; make it a URL."""
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    scheme, _, rest = host.partition("://")
    if rest.startswith("0.0.0.0"):  # a bind address, not one to connect to
        rest = "127.0.0.1" + rest[len("0.0.0.0") :]
    if ":" not in rest.split("/", 1)[0]:
        rest = rest.split("/", 1)[0] + ":11434" + (rest[len(rest.split("/", 1)[0]) :])
    return f"{scheme}://{rest}"


def default_db_path() -> Path:
    return user_data_path("shoal") / "shoal.db"


def db_location(db_path: object, where: str = "db_path") -> Path | str:
    """A `db_path` value as shoal opens it: a URL stays text (a `Path` would fold its `//`);
    anything else is a file's path, relative to the working folder. `where` names the value's
    source in the error."""
    if isinstance(db_path, Path):
        return db_path
    if not isinstance(db_path, str) or not db_path.strip():
        raise ConfigError(f"{where}: give a SQLite file's path or a postgresql:// URL, not {db_path!r}")
    return db_path if is_url(db_path) else Path(db_path)


def read_db_location(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path | str:
    """Where the database is, as `Settings.load(path, env).db_path` would say, without the rest."""
    env = os.environ if env is None else env
    if env.get("SHOAL_DB"):
        return db_location(env["SHOAL_DB"], "SHOAL_DB")
    found = find_config(path, env)
    data = read_toml(found)[0] if found is not None else {}
    return db_location(data["db_path"], f"db_path in {found}") if "db_path" in data else default_db_path()

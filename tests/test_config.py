from __future__ import annotations

from pathlib import Path

import pytest

from shoal.config import Settings
from shoal.configfile import normalise_host
from shoal.errors import ConfigError


def test_defaults_need_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(env={})
    assert settings.source is None
    assert str(settings.model_for("classifier")) == "embedded:smollm2-135m"
    assert settings.threshold_for("classifier", 0.7) == 0.7


def test_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text(
        """
default_model = "ollama:qwen2.5:3b"

[ollama]
host = "http://gpu-box:11434"

[specialists.classifier]
model = "embedded:smollm2-135m"
threshold = 0.8

[openai.prices."my-model"]
input_per_m = 1.0
output_per_m = 2.0
"""
    )
    settings = Settings.load(path, env={"OLLAMA_HOST": "0.0.0.0", "SHOAL_DB": str(tmp_path / "x.db")})
    assert settings.source == path
    assert str(settings.model_for("extractor")) == "ollama:qwen2.5:3b"
    assert str(settings.model_for("classifier")) == "embedded:smollm2-135m"
    assert settings.threshold_for("classifier", 0.5) == 0.8
    assert settings.ollama.host == "http://127.0.0.1:11434"  # env wins over the file
    assert settings.db_path == tmp_path / "x.db"
    assert settings.openai.prices["my-model"].output_per_m == 2.0


def test_config_from_env_var(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('frontier_model = "openai:gpt-4.1"\n')
    assert Settings.load(env={"SHOAL_CONFIG": str(path)}).frontier_model == "openai:gpt-4.1"


def test_invalid_value_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text('default_model = "embedded:smollm2-135m"\n\n[specialists.classifier]\nthreshold = 1.5\n')
    with pytest.raises(ConfigError, match=r"specialists\.classifier\.threshold \(line 4\)"):
        Settings.load(path, env={})


def test_bad_model_reference_in_file(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text('default_model = "qwen"\n')
    with pytest.raises(ConfigError, match=r"default_model \(line 1\).*backend:model"):
        Settings.load(path, env={})


def test_unknown_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text("[ollama]\nhots = 'x'\n")
    with pytest.raises(ConfigError, match=r"ollama\.hots \(line 2\)"):
        Settings.load(path, env={})


def test_broken_toml(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text("[ollama\nhost=\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 1"):
        Settings.load(path, env={})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("gpu-box:11500", "http://gpu-box:11500"),
        ("https://ollama.example.com", "https://ollama.example.com:11434"),
        ("http://10.0.0.5:11434/", "http://10.0.0.5:11434"),
    ],
)
def test_ollama_host_forms(raw: str, url: str) -> None:
    assert normalise_host(raw) == url


@pytest.mark.parametrize(
    ("toml", "env"),
    [
        ("", {}),
        ('db_path = "data/here.db"', {}),
        ('db_path = "~/shoal/x.db"', {}),
        ('db_path = "postgresql://u:p@db.example:5432/shoal"', {}),
        ('db_path = "data/here.db"', {"SHOAL_DB": "elsewhere.db"}),
        ("", {"SHOAL_DB": "postgresql://localhost/shoal"}),
    ],
)
def test_read_only_commands_find_the_database_the_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str]
) -> None:
    # `shoal runs` reads db_path without building the settings; it must open the same database
    from shoal.configfile import read_db_location

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "shoal.toml"
    path.write_text(toml + "\n[specialists.summary]\nthreshold = 0.5\n", encoding="utf-8")
    assert read_db_location(path, env) == Settings.load(path, env=env).db_path
    path.unlink()
    assert read_db_location(None, env) == Settings.load(env=env).db_path  # no file: the default


@pytest.mark.parametrize("value", ["42", '""', "[1, 2]"])
def test_a_bad_db_path_is_refused_on_both_paths(tmp_path: Path, value: str) -> None:
    from shoal.configfile import read_db_location

    path = tmp_path / "shoal.toml"
    path.write_text(f"db_path = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"db_path in {path}: .*postgresql:// URL"):
        read_db_location(path, {})
    with pytest.raises(ConfigError, match=r"db_path \(line 1\).*postgresql:// URL"):
        Settings.load(path, env={})


def test_a_broken_file_is_named_on_the_read_path(tmp_path: Path) -> None:
    from shoal.configfile import read_db_location

    path = tmp_path / "shoal.toml"
    path.write_text("db_path = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_db_location(path, {})


def test_a_blank_shoal_db_is_named_on_the_read_path(tmp_path: Path) -> None:
    from shoal.configfile import read_db_location

    with pytest.raises(ConfigError, match="SHOAL_DB: give a SQLite file's path"):
        read_db_location(tmp_path / "none.toml", {"SHOAL_DB": "  "})

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.config import Settings, normalise_host
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

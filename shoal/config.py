"""Typed settings: `shoal.toml` plus the environment.

Where the file comes from, first match wins: an explicit path (`--config`), `SHOAL_CONFIG`,
`./shoal.toml`, then the user's config dir (`~/.config/shoal/shoal.toml`). No file at all is
fine: the defaults run every specialist on the embedded model, which needs no server.

Environment overrides (applied after the file): `SHOAL_DB`, `OLLAMA_HOST`,
`SHOAL_DEFAULT_MODEL`, `SHOAL_FRONTIER_MODEL`, `SHOAL_FRONTIER_BASE_URL`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoal.configfile import apply_env, db_location, default_db_path, find_config, read_toml
from shoal.errors import ConfigError
from shoal.models.base import ModelRef, RetryPolicy
from shoal.privacy import PrivacySettings
from shoal.tickets.settings import BITEXT_CATEGORIES, TicketSettings

DEFAULT_MODEL = "embedded:smollm2-135m"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OllamaSettings(_Section):
    host: str = DEFAULT_OLLAMA_HOST
    timeout_s: float = Field(default=120.0, gt=0)
    keep_alive: str | float | None = "5m"
    num_ctx: int | None = Field(default=None, gt=0)


class EmbeddedSettings(_Section):
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    n_gpu_layers: int = 0
    # tokens per text when embedding for a trained head; longer texts are cut to this
    embed_ctx: int = Field(default=512, ge=32)
    # name -> GGUF path, so `embedded:mymodel` can point at any file (an Ollama blob, say)
    models: dict[str, str] = Field(default_factory=dict)


class Price(_Section):
    """US dollars per million tokens."""

    input_per_m: float = Field(ge=0)
    output_per_m: float = Field(ge=0)


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(input_per_m=0.15, output_per_m=0.60),
    "gpt-4o": Price(input_per_m=2.50, output_per_m=10.00),
    "gpt-4.1-mini": Price(input_per_m=0.40, output_per_m=1.60),
    "gpt-4.1": Price(input_per_m=2.00, output_per_m=8.00),
}


class OpenAISettings(_Section):
    """Any OpenAI-compatible endpoint; the frontier tier."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=60.0, gt=0)
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES))


class EscalationSettings(_Section):
    resample: int = Field(default=0, ge=0, le=20, description="self-consistency samples before the frontier")
    resample_temperature: float = Field(default=0.8, gt=0, le=2)
    frontier_per_run_usd: float | None = Field(default=0.50, ge=0)
    frontier_per_day_usd: float | None = Field(default=5.00, ge=0)
    human: bool = True


class StoreSettings(_Section):
    """The [store] section: how long the database keeps runs (`shoal prune`)."""

    # runs last touched longer ago than this go on `shoal prune` without --older-than (nothing
    # is pruned unless `shoal prune` runs: schedule it, e.g. daily from cron)
    retention_days: float = Field(default=30.0, gt=0)


class WorkerSettings(_Section):
    """The [workers] section: how `shoal worker` processes take work from the database's queue."""

    # a lease not renewed for this long is taken to be a dead worker's: its item is queued again
    lease_s: float = Field(default=60.0, ge=5)
    poll_s: float = Field(default=1.0, gt=0, le=60)  # how often an idle worker looks for work
    max_attempts: int = Field(default=3, ge=1, le=100)  # leases of one item before it fails
    concurrency: int = Field(default=1, ge=1, le=64)  # items one worker process runs at once


class ServeSettings(_Section):
    """The [serve] section: `shoal serve`'s HTTP API and the webhooks it (or a worker) delivers."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65_535)
    # the ticket result is POSTed to each of these when a ticket ends done or waiting for a person
    webhooks: list[str] = Field(default_factory=list)
    # the environment variable that holds the HMAC secret webhooks are signed with (never the file)
    secret_env: str = "SHOAL_WEBHOOK_SECRET"
    max_body_bytes: int = Field(default=1_000_000, ge=1_024)
    max_batch: int = Field(default=100, ge=1, le=10_000)  # tickets in one POST
    # requests per minute per token (a token bucket that holds this many); 0 turns the limit off
    rate_per_minute: int = Field(default=600, ge=0)
    # tickets the in-process worker triages at once
    concurrency: int = Field(default=4, ge=1, le=64)
    # /metrics without a bearer token (a scraper inside the network); true: a token is required
    metrics_auth: bool = False
    # a failed delivery waits initial * 2^(attempt-1) seconds (at most max) before the next try;
    # it fails for good after max_attempts (the defaults keep trying for about four hours)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=3_600.0, gt=0)
    max_attempts: int = Field(default=15, ge=1, le=100)
    delivery_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook {url!r} is not an http:// or https:// URL")
        return value


class SpecialistSettings(_Section):
    model: str | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # most tokens a reply may take; a reply cut at this limit is a failed answer, so raise it
    # when a specialist's evidence says "cut off at max_tokens"
    max_tokens: int | None = Field(default=None, ge=8, le=32_768)
    # classifiers only: "auto" answers with the active trained head when `shoal train` made one
    # and prompts otherwise; "prompt" always prompts; "trained" requires a head
    mode: Literal["auto", "prompt", "trained"] = "auto"
    embed_model: str | None = Field(default=None, description="model whose embeddings the head reads")
    head: Path | None = Field(default=None, description="a head file to use instead of the stored active one")

    @field_validator("model", "embed_model")
    @classmethod
    def _valid_ref(cls, value: str | None) -> str | None:
        if value is not None:
            ModelRef.parse(value)
        return value


class Settings(_Section):
    default_model: str = DEFAULT_MODEL
    frontier_model: str | None = "openai:gpt-4o-mini"
    # a SQLite file, or a PostgreSQL server's postgresql:// URL (many workers on many machines)
    db_path: Path | str = Field(default_factory=default_db_path)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    # what is withheld from the frontier: emails, phones, cards, IBANs, configured patterns
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    specialists: dict[str, SpecialistSettings] = Field(default_factory=dict)
    # the task graph's general-purpose classifier; the shipped default is Bitext's taxonomy
    classifier_labels: list[str] = Field(default_factory=lambda: list(BITEXT_CATEGORIES), min_length=2)
    max_task_chars: int = Field(default=100_000, ge=1)
    max_plan_steps: int = Field(default=6, ge=1, le=20)
    tickets: TicketSettings = Field(default_factory=TicketSettings)
    # LangGraph checkpoint durability; finished steps are crash-safe in shoal's own rows either way
    durability: Literal["exit", "async", "sync"] = "exit"
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("db_path", mode="before")
    @classmethod
    def _db_location(cls, value: object) -> Path | str:
        try:
            return db_location(value)
        except ConfigError as exc:  # pydantic names the key and the file's line
            raise ValueError(str(exc).removeprefix("db_path: ")) from None

    @field_validator("default_model", "frontier_model")
    @classmethod
    def _valid_ref(cls, value: str | None) -> str | None:
        if value is not None:
            ModelRef.parse(value)
        return value

    def model_for(self, specialist: str) -> ModelRef:
        chosen = self.specialists.get(specialist, SpecialistSettings()).model
        return ModelRef.parse(chosen or self.default_model)

    def embed_model_for(self, specialist: str) -> ModelRef:
        """Embeddings for a trained head: `embed_model`, else the specialist's own model."""
        chosen = self.specialists.get(specialist, SpecialistSettings()).embed_model
        return ModelRef.parse(chosen) if chosen else self.model_for(specialist)

    def resolve(self, path: Path) -> Path:
        """A path from the file, relative to the file's folder (so `--config examples/shoal.toml`
        finds `examples/heads/...` from anywhere); from defaults, relative to the working folder."""
        path = path.expanduser()
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    def max_tokens_for(self, specialist: str) -> int | None:
        """The configured `max_tokens`, or None for the specialist's own default."""
        return self.specialists.get(specialist, SpecialistSettings()).max_tokens

    def threshold_for(self, specialist: str, default: float) -> float:
        chosen = self.specialists.get(specialist, SpecialistSettings()).threshold
        return default if chosen is None else chosen

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Read the file (if any) and the environment, and validate both."""
        env = os.environ if env is None else env
        found = find_config(path, env)
        data, text = read_toml(found) if found is not None else ({}, "")
        apply_env(data, env)
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, found, text)) from None
        settings.source = found
        return settings


def save_specialist(path: Path, name: str, *, model: str | None = None, threshold: float | None = None) -> Path:
    """Write one specialist's model and/or threshold into a shoal.toml, keeping everything else
    in the file (comments and layout included), and check the result still loads."""
    import tomlkit

    if model is not None:
        ModelRef.parse(model)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold} is outside 0..1")
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    specialists = document.setdefault("specialists", tomlkit.table(is_super_table=True))
    section = specialists.setdefault(name, tomlkit.table())
    if model is not None:
        section["model"] = model
    if threshold is not None:
        section["threshold"] = round(threshold, 4)
    text = tomlkit.dumps(document)
    Settings.model_validate(tomllib.loads(text))  # never write a file shoal then refuses to read
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _explain(exc: ValidationError, path: Path | None, text: str) -> str:
    where = str(path) if path else "the environment"
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        line = _line_of(text, [str(p) for p in err["loc"]])
        at = f" (line {line})" if line else ""
        lines.append(f"  {key}{at}: {err['msg']}")
    return f"invalid configuration in {where}:\n" + "\n".join(lines)


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of a key: the last table header on its path, then the key."""
    if not text or not loc:
        return None
    rows = text.splitlines()
    start = 0
    for depth in range(len(loc) - 1, 0, -1):
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, loc[:depth])) + r"\s*\]")
        hit = next((i for i, row in enumerate(rows) if header.match(row)), None)
        if hit is not None:
            start = hit
            break
    key = re.compile(r"^\s*[\"']?" + re.escape(loc[-1]) + r"[\"']?\s*=")
    for i in range(start, len(rows)):
        if key.match(rows[i]):
            return i + 1
    return start + 1 if start else None

"""Build model backends from settings.

Kept apart from `models/` so the backends themselves never read configuration: they take plain
arguments, which is what tests and library users pass.
"""

from __future__ import annotations

from shoal.config import Settings
from shoal.models.base import BackendName, ModelBackend
from shoal.models.router import ModelRouter, Recorder


def build_backend(name: BackendName, settings: Settings) -> ModelBackend:
    if name == "ollama":
        from shoal.models.ollama import OllamaBackend

        return OllamaBackend(
            settings.ollama.host,
            timeout_s=settings.ollama.timeout_s,
            keep_alive=settings.ollama.keep_alive,
            num_ctx=settings.ollama.num_ctx,
            retry=settings.retry,
        )
    if name == "embedded":
        from shoal.models.embedded import EmbeddedBackend

        return EmbeddedBackend(
            n_ctx=settings.embedded.n_ctx,
            n_threads=settings.embedded.n_threads,
            n_gpu_layers=settings.embedded.n_gpu_layers,
            models=settings.embedded.models,
            embed_ctx=settings.embedded.embed_ctx,
        )
    if name == "scripted":
        raise ValueError("the scripted backend answers from a script: build ScriptedBackend(...) in code")
    from shoal.models.openai import OpenAIBackend

    return OpenAIBackend(
        base_url=settings.openai.base_url,
        api_key_env=settings.openai.api_key_env,
        timeout_s=settings.openai.timeout_s,
        prices=settings.openai.prices,
        retry=settings.retry,
    )


def build_router(settings: Settings, recorder: Recorder | None = None) -> ModelRouter:
    return ModelRouter(lambda name: build_backend(name, settings), recorder)

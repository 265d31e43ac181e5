"""Backend administration: is each backend there, what models does it have, pull one into Ollama,
and how each specialist is set up (model, threshold, prompt or trained head)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pydantic import BaseModel

from shoal.backends import build_backend
from shoal.config import Settings
from shoal.engine.wiring import Wiring
from shoal.errors import ShoalError
from shoal.models.base import BACKENDS, BackendHealth, RetryPolicy
from shoal.specialists.classifier import Classifier

if TYPE_CHECKING:
    from shoal.models.ollama import PullProgress


class SpecialistSetup(BaseModel):
    name: str
    model: str
    threshold: float
    how: str  # "prompt", "head v3", "head (file)", or the error that keeps a head from loading


async def health(settings: Settings) -> list[BackendHealth]:
    """Each backend: reachable or not (and why), with its models; one quick attempt each."""
    quick = settings.model_copy(update={"retry": RetryPolicy(attempts=1)})
    results = []
    for name in BACKENDS:
        try:
            backend = build_backend(name, quick)
        except ShoalError as exc:
            results.append(BackendHealth(backend=name, reachable=False, where="", reason=str(exc)))
            continue
        try:
            results.append(await backend.health())
        finally:
            await backend.aclose()
    return results


async def pull(settings: Settings, model: str) -> AsyncIterator[PullProgress]:
    """Pull a model into the configured Ollama server, yielding its progress lines."""
    from shoal.models.ollama import OllamaBackend

    backend = OllamaBackend(settings.ollama.host, retry=RetryPolicy(attempts=1))
    try:
        async for step in backend.pull(model):
            yield step
    finally:
        await backend.aclose()


def specialist_setups(wiring: Wiring) -> list[SpecialistSetup]:
    """How the planner and each task and ticket specialist answers now."""
    planner = wiring.planner
    rows = [SpecialistSetup(name="planner", model=str(planner.model), threshold=planner.threshold, how="prompt")]
    for group in (wiring.specialists, wiring.ticket_specialists()):
        try:
            wiring.heads.attach(group)
        except ShoalError as exc:  # shown, not raised: this is what an operator looks at to fix it
            problem = f"error: {exc}"
        else:
            problem = ""
        for name, s in group.items():
            head = s.head if isinstance(s, Classifier) else None
            how = problem if problem and isinstance(s, Classifier) else "prompt"
            if head is not None:
                how = f"head v{head.info.version}" if head.info.version is not None else "head (file)"
            rows.append(SpecialistSetup(name=name, model=str(s.model), threshold=s.threshold, how=how))
    return rows

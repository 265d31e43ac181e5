"""Texts to vectors through any backend, batched, with a cache keyed by (model, text hash).

The cache is a protocol so this layer stays free of the store: the engine hands down the
store's implementation, and a training run that sees a text again reads its vector back
instead of asking the model.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from shoal.errors import PermanentModelError
from shoal.models.base import ModelRef

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from shoal.models.router import ModelRouter

    Matrix = npt.NDArray[np.float32]


class VectorCache(Protocol):
    """Stored float32 vectors by model and text key (`Store` implements it)."""

    def cached_vectors(self, model: str, keys: Sequence[str]) -> dict[str, bytes]: ...

    def cache_vectors(self, model: str, vectors: dict[str, bytes], dim: int) -> None: ...


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


Progress = Callable[[int, int], None]  # (texts done, texts in all)


class Embedder:
    """Embeds texts with one model; `sent` counts texts that reached the backend."""

    def __init__(
        self,
        router: ModelRouter,
        model: ModelRef | str,
        *,
        cache: VectorCache | None = None,
        batch_size: int = 64,
    ) -> None:
        self.router = router
        self.model = ModelRef.parse(model)
        self.cache = cache
        self.batch_size = batch_size
        self.sent = 0
        self.reused = 0
        self.seconds = 0.0  # time the backend spent embedding (for throughput)

    async def embed(self, texts: Sequence[str], *, progress: Progress | None = None, remember: bool = True) -> Matrix:
        """One row per text, in order; each distinct text is embedded at most once.

        `remember=False` reads the cache but does not add to it: a classifier answering a
        stream of tickets would otherwise store a vector per ticket, most never trained on.
        """
        import numpy as np

        keys = [text_key(t) for t in texts]
        model = str(self.model)
        known: dict[str, Matrix] = {}
        if self.cache is not None and keys:
            stored = await asyncio.to_thread(self.cache.cached_vectors, model, keys)
            known = {k: np.frombuffer(v, dtype="<f4") for k, v in stored.items()}
        self.reused += sum(1 for k in dict.fromkeys(keys) if k in known)
        todo = list({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
        done = len(keys) - len(todo)
        if progress is not None:
            progress(done, len(keys))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            result = await self.router.embed(self.model, [t for _, t in batch])
            self.sent += len(batch)
            self.seconds += result.latency_s
            fresh = {k: np.asarray(v, dtype="<f4") for (k, _), v in zip(batch, result.vectors, strict=True)}
            known.update(fresh)
            if self.cache is not None and remember:
                await asyncio.to_thread(
                    self.cache.cache_vectors, model, {k: v.tobytes() for k, v in fresh.items()}, result.dim
                )
            done += len(batch)
            if progress is not None:
                progress(min(done, len(keys)), len(keys))
        if progress is not None:
            progress(len(keys), len(keys))
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        dims = {known[k].shape[0] for k in keys}
        if len(dims) != 1:
            # a cache filled by another build of the model, or a server that changed models
            raise PermanentModelError(
                f"embeddings from {model} have different sizes ({sorted(dims)}); "
                f"clear the cache with `DELETE FROM embedding WHERE model = '{model}'`"
            )
        return np.stack([known[k] for k in keys]).astype(np.float32)

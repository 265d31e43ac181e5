"""Who answers: model backends behind one protocol.

Backends are imported lazily (`shoal.models.embedded`, `.ollama`, `.openai`) so importing this
package costs neither llama.cpp nor the openai SDK.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.models.base import (
        BackendHealth,
        ChatRequest,
        Embeddings,
        Message,
        ModelBackend,
        ModelInfo,
        ModelRef,
        Reply,
        RetryPolicy,
        TokenLogprob,
        TopLogprob,
        Usage,
        parse_structured,
    )
    from shoal.models.embeddings import Embedder, VectorCache
    from shoal.models.router import CallRecord, ModelRouter, Recorder

# `from shoal.models.base import X` runs this file first: the router and the embedder load only
# when asked for by name, so reading the config (which needs `ModelRef`) stays cheap
_HOMES = {
    "Embedder": "embeddings",
    "VectorCache": "embeddings",
    "CallRecord": "router",
    "ModelRouter": "router",
    "Recorder": "router",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'shoal.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"shoal.models.{_HOMES.get(name, 'base')}"), name)


__all__ = [
    "BackendHealth",
    "CallRecord",
    "ChatRequest",
    "Embedder",
    "Embeddings",
    "Message",
    "ModelBackend",
    "ModelInfo",
    "ModelRef",
    "ModelRouter",
    "Recorder",
    "Reply",
    "RetryPolicy",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "VectorCache",
    "parse_structured",
]

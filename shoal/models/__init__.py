"""Who answers: model backends behind one protocol.

Backends are imported lazily (`shoal.models.embedded`, `.ollama`, `.openai`) so importing this
package costs neither llama.cpp nor the openai SDK.
"""

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

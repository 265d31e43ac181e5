"""shoal: a graph of small specialist language models that knows when to ask a bigger one.

`import shoal` stays light: it imports neither Textual, llama.cpp nor the openai SDK. Those load
when the TUI, the embedded backend or the frontier backend is first used.
"""

from shoal.config import Settings
from shoal.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    InvalidRequestError,
    MissingExtraError,
    ModelError,
    ModelLoadError,
    ModelNotFoundError,
    PermanentModelError,
    SchemaValidationError,
    ServerError,
    ShoalError,
    TransientModelError,
)
from shoal.models import (
    CallRecord,
    ChatRequest,
    Message,
    ModelBackend,
    ModelRef,
    ModelRouter,
    Reply,
    RetryPolicy,
    TokenLogprob,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BackendUnavailableError",
    "CallRecord",
    "ChatRequest",
    "ConfigError",
    "InvalidRequestError",
    "Message",
    "MissingExtraError",
    "ModelBackend",
    "ModelError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRouter",
    "PermanentModelError",
    "Reply",
    "RetryPolicy",
    "SchemaValidationError",
    "ServerError",
    "Settings",
    "ShoalError",
    "TokenLogprob",
    "TransientModelError",
    "Usage",
    "__version__",
]

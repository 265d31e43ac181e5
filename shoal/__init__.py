"""shoal: a graph of small specialist language models that knows when to ask a bigger one.

`import shoal` stays light: it imports neither Textual, llama.cpp nor the openai SDK. Those load
when the TUI, the embedded backend or the frontier backend is first used.
"""

from typing import TYPE_CHECKING, Any

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
    UnsupportedCPUError,
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
from shoal.status import (
    AnsweredBy,
    EscalationOutcome,
    LadderStatus,
    ReviewStatus,
    Rung,
    RunStatus,
    StepStatus,
    TicketStatus,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from shoal.engine import RunReport, Shoal


def __getattr__(name: str) -> Any:
    # The engine pulls in LangGraph and the store; load it when first asked for, so that
    # `import shoal` for the model layer alone stays quick.
    if name in ("Shoal", "RunReport"):
        from shoal import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'shoal' has no attribute {name!r}")


__all__ = [
    "AnsweredBy",
    "AuthenticationError",
    "BackendUnavailableError",
    "CallRecord",
    "ChatRequest",
    "ConfigError",
    "EscalationOutcome",
    "InvalidRequestError",
    "LadderStatus",
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
    "ReviewStatus",
    "RunReport",
    "RunStatus",
    "Rung",
    "SchemaValidationError",
    "ServerError",
    "Settings",
    "Shoal",
    "ShoalError",
    "StepStatus",
    "TicketStatus",
    "TokenLogprob",
    "TransientModelError",
    "UnsupportedCPUError",
    "Usage",
    "__version__",
]

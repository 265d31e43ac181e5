"""shoal: a graph of small specialist language models that knows when to ask a bigger one.

`import shoal` stays light: it imports neither Textual, llama.cpp nor the openai SDK. Those load
when the TUI, the embedded backend or the frontier backend is first used.
"""

from typing import TYPE_CHECKING, Any

from shoal.config import Settings
from shoal.errors import (
    AnswerError,
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    HeadError,
    InputFileError,
    InvalidRequestError,
    LabelledDataError,
    MissingExtraError,
    ModelError,
    ModelLoadError,
    ModelNotFoundError,
    PermanentModelError,
    PlanError,
    SandboxUnavailableError,
    SchemaValidationError,
    ServerError,
    ShoalError,
    StoreError,
    TaskError,
    TransientModelError,
    UnsupportedCPUError,
    UsageError,
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
    "AnswerError",
    "AnsweredBy",
    "AuthenticationError",
    "BackendUnavailableError",
    "CallRecord",
    "ChatRequest",
    "ConfigError",
    "EscalationOutcome",
    "HeadError",
    "InputFileError",
    "InvalidRequestError",
    "LabelledDataError",
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
    "PlanError",
    "Reply",
    "RetryPolicy",
    "ReviewStatus",
    "RunReport",
    "RunStatus",
    "Rung",
    "SandboxUnavailableError",
    "SchemaValidationError",
    "ServerError",
    "Settings",
    "Shoal",
    "ShoalError",
    "StepStatus",
    "StoreError",
    "TaskError",
    "TicketStatus",
    "TokenLogprob",
    "TransientModelError",
    "UnsupportedCPUError",
    "Usage",
    "UsageError",
    "__version__",
]

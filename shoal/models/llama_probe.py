"""Does the installed llama.cpp run on this machine? Asked once, in a child process.

A llama.cpp compiled with `-march=native` on one machine (or a wheel built elsewhere) can carry
instructions this CPU or its OS does not enable. AMX is the case seen: a VM's CPU advertises it,
the hypervisor does not enable its register state, and the first prompt of more than a few
tokens dies of SIGILL, taking the whole Python process (a batch, a test run) with it and
printing nothing useful. So before the first model loads, a child process loads it and decodes a
real prompt; if the child dies of a signal, shoal raises an error that says what happened and how
to rebuild, instead of dying itself.

The verdict is cached per llama.cpp build (library path, size and mtime) and model file, so it
costs one child process per machine and build, not one per run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from platformdirs import user_cache_path

from shoal.errors import UnsupportedCPUError

# Long enough to run the matrix kernels a 1-token prompt skips (that is how a smoke test misses it).
_PROBE_CODE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 8)
llm.eval(tokens[:96])
print("ok")
"""

PROBE_TIMEOUT_S = 120.0

REBUILD = (
    "rebuild llama-cpp-python without the instructions your OS does not enable: "
    "`uv sync --reinstall-package llama-cpp-python` inside a shoal checkout (its pyproject.toml turns AMX off), "
    "or with pip: `CMAKE_ARGS=\"-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' "
    "-DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'\" "
    "pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python llama-cpp-python`"
)

_CHECKED: set[str] = set()
_CHECK_LOCK = threading.Lock()


def system_info() -> str:
    """What the installed llama.cpp says it was built with (`AVX2 = 1 | AMX_INT8 = 1 | ...`)."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def enabled_features(info: str) -> set[str]:
    """The feature names a system-info string marks `= 1`."""
    found = set()
    for part in info.replace("|", "\n").splitlines():
        name, _, value = part.partition("=")
        if value.strip() == "1":
            found.add(name.strip().split(":")[-1].strip())
    return found


def explain_death(returncode: int, stderr: str, info: str = "") -> str:
    """A sentence for a probe child that did not come back: what it died of and the fix."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
    else:
        name = f"exit status {returncode}"
    amx = sorted(f for f in enabled_features(info) if f.startswith("AMX"))
    built = f" It was built with {', '.join(amx)}, which this machine does not run." if amx else ""
    if returncode == -signal.SIGILL:
        return (
            "llama.cpp crashed with an illegal instruction (SIGILL) on this machine: the installed "
            f"llama-cpp-python uses CPU instructions that this CPU or its OS does not enable.{built} "
            f'To fix it, {REBUILD}. Or use Ollama instead: set default_model = "ollama:..." in shoal.toml.'
        )
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    detail = f": {tail[0]}" if tail else ""
    return f"llama.cpp died while loading a model in a test process ({name}{detail}). If it keeps happening, {REBUILD}."


def run_probe(model_path: Path, *, code: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Run the probe child (`code`: its Python source, for tests); None when it ran, else the
    explanation of how it died."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code or _PROBE_CODE, str(model_path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None  # slow is not broken: the real load reports real errors itself
    if done.returncode == 0:
        return None
    if done.returncode > 0:
        # a Python-level error (bad file, missing package) is the real load's to report, with
        # the messages that path already gives; only deaths by signal are this module's business
        return None
    info = ""
    try:
        info = system_info()
    except Exception:
        info = ""
    return explain_death(done.returncode, done.stderr, info)


def _library() -> Path | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    folder = Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml-cpu.so", "libllama.so", "libggml-cpu.dylib", "libllama.dylib"):
        if (folder / name).exists():
            return folder / name
    return Path(llama_cpp.__file__)


def _cache_key(model_path: Path) -> str | None:
    library = _library()
    if library is None:
        return None
    lib = library.stat()
    model = model_path.stat()
    return f"{library}:{lib.st_size}:{lib.st_mtime_ns}|{model_path.resolve()}:{model.st_size}"


def _cache_file() -> Path:
    return user_cache_path("shoal") / "llama-probe.json"


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_cache(key: str, verdict: str) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _read_cache()
        cache[key] = verdict
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        scratch.replace(path)  # atomic: parallel test workers never read half a file
    except OSError:
        pass  # an unwritable cache only costs a probe next time


def check_runs(model_path: Path) -> None:
    """Raise UnsupportedCPUError if llama.cpp dies on this machine; at most one probe per build."""
    key = _cache_key(model_path)
    if key is None:
        return
    with _CHECK_LOCK:
        if key in _CHECKED:
            return
        cached = _read_cache().get(key)
        if cached is None:
            problem = run_probe(model_path)
            cached = "ok" if problem is None else problem
            _write_cache(key, cached)
        if cached != "ok":
            raise UnsupportedCPUError(cached)
        _CHECKED.add(key)

"""Run untrusted generated code in a separate, fenced-off process.

Isolation comes from bubblewrap (`bwrap`): new user, network, PID, IPC and UTS namespaces (so
no network at all), a read-only view of the system directories only, a fresh temporary
directory as the only writable place, and a clean environment (no API keys). Resource limits
(CPU time, address space, processes, open files, file size) are set with `setrlimit`; wall time
and output size are enforced by the parent, which kills the whole process group. When running
as root the code also drops to an unprivileged uid, because the kernel does not apply the
process limit to root.

If isolation cannot be set up the sandbox fails closed with `SandboxUnavailableError`; it
never falls back to running code unfenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shoal.errors import ShoalError

NOBODY = 65534
# As root, each run gets a uid of its own from this range: the kernel counts the process
# limit per uid, so concurrent runs must not share one.
RUN_UIDS = range(1_700_000_000, 1_700_100_000)
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc/alternatives")

Limit = Literal["cpu", "wall", "memory", "output", "processes"]


class SandboxUnavailableError(ShoalError):
    """Code cannot be run safely on this machine."""


class SandboxLimits(BaseModel):
    cpu_s: int = Field(default=5, ge=1)
    wall_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=32)
    processes: int = Field(default=16, ge=1)
    open_files: int = Field(default=64, ge=8)
    output_bytes: int = Field(default=1_000_000, ge=1024)
    file_bytes: int = Field(default=10_000_000, ge=1024)


class SandboxResult(BaseModel):
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    limit_hit: Limit | None = None
    files: dict[str, str] = Field(default_factory=dict, description="text files the code left behind")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_hit is None

    def describe(self) -> str:
        if self.limit_hit:
            return f"stopped by the {self.limit_hit} limit"
        return f"exit code {self.exit_code}"


def _world_usable(path: Path) -> bool:
    """Whether an unprivileged user can execute `path` (every parent directory searchable)."""
    try:
        real = path.resolve()
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


@functools.lru_cache(maxsize=4)
def _probe(command: tuple[str, ...]) -> str | None:
    """None when bwrap can build this sandbox here, else why not."""
    preexec = _drop_privileges if os.geteuid() == 0 else None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, preexec_fn=preexec)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")


def _drop_privileges(uid: int = NOBODY) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


class Sandbox:
    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        python: str | None = None,
        bwrap: str | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self._python = python
        self._bwrap = bwrap

    def check(self) -> tuple[str, str]:
        """(bwrap, python) to use, or `SandboxUnavailableError` saying how to fix it."""
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailableError(
                f"the code sandbox needs Linux namespaces (bubblewrap); this is {sys.platform}. "
                "Run the coder on a Linux host, or leave it out of the shoal's specialists"
            )
        bwrap = self._bwrap or shutil.which("bwrap")
        if not bwrap or not Path(bwrap).exists():
            raise SandboxUnavailableError(
                "the code sandbox needs bubblewrap, which is not installed: run "
                "`sudo apt-get install bubblewrap` (Debian/Ubuntu) or `sudo dnf install bubblewrap`"
            )
        python = self._interpreter()
        with tempfile.TemporaryDirectory(prefix="shoal-probe-") as tmp:
            if os.geteuid() == 0:
                os.chown(tmp, NOBODY, NOBODY)
            why = _probe(tuple(self._command(bwrap, python, Path(tmp), ["-c", "pass"])))
        if why is not None:
            raise SandboxUnavailableError(
                f"bubblewrap cannot create a sandbox here ({why}); unprivileged user namespaces "
                "may be disabled: enable them (sysctl kernel.unprivileged_userns_clone=1) or run "
                "shoal where they are allowed"
            )
        return bwrap, python

    def _interpreter(self) -> str:
        if self._python:
            return self._python
        candidates = [Path(sys.executable), Path("/usr/bin/python3"), Path("/usr/local/bin/python3")]
        if os.geteuid() != 0:
            return str(Path(sys.executable).resolve())
        for candidate in candidates:  # the code runs as nobody, who must be able to execute it
            if candidate.exists() and _world_usable(candidate):
                return str(candidate.resolve())
        raise SandboxUnavailableError(
            "no Python interpreter is usable by an unprivileged user (the sandbox drops root); "
            "install python3 system-wide or pass Sandbox(python=...)"
        )

    def _command(self, bwrap: str, python: str, workdir: Path, args: list[str]) -> list[str]:
        binds: list[str] = []
        prefix = str(Path(python).parent.parent)
        for folder in dict.fromkeys((*SYSTEM_DIRS, prefix)):
            path = Path(folder)
            if path.is_symlink():  # merged-/usr systems: /lib -> usr/lib
                binds += ["--symlink", os.readlink(path), folder]
            elif path.exists() and not any(folder.startswith(d + "/") for d in SYSTEM_DIRS):
                binds += ["--ro-bind", folder, folder]
        return [
            bwrap,
            *binds,
            "--bind", str(workdir), "/sandbox",
            "--tmpfs", "/tmp",
            "--proc", "/proc",
            "--dev", "/dev",
            "--remount-ro", "/",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "HOME", "/sandbox",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--chdir", "/sandbox",
            python, "-I", *args,
        ]  # fmt: skip

    def _preexec(self, uid: int, base_processes: int) -> None:
        limits = self.limits
        if os.geteuid() == 0:
            _drop_privileges(uid)
        memory = limits.memory_mb * 1024 * 1024
        for which, value in (
            (resource.RLIMIT_AS, memory),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_FSIZE, limits.file_bytes),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(which, (value, value))
        # soft below hard: SIGXCPU first, so the cause can be told from other kills
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        # bwrap and its init take two slots; an ordinary user's other processes count too
        nproc = base_processes + limits.processes + 2
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    async def run(
        self, code: str, *, files: dict[str, str] | None = None, args: list[str] | None = None
    ) -> SandboxResult:
        """Run `code` as `main.py` with `files` beside it; return what happened."""
        bwrap, python = self.check()
        with tempfile.TemporaryDirectory(prefix="shoal-sandbox-") as tmp:
            workdir = Path(tmp)
            uid, base = await asyncio.to_thread(_prepare, workdir, code, files or {})
            command = self._command(bwrap, python, workdir, ["main.py", *(args or [])])
            result = await self._execute(command, functools.partial(self._preexec, uid, base))
            result.files = await asyncio.to_thread(_collect, workdir)
            return result

    async def _execute(self, command: list[str], preexec: Callable[[], None]) -> SandboxResult:
        limits = self.limits
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec,
        )
        budget = [limits.output_bytes]
        over = asyncio.Event()

        async def drain(stream: asyncio.StreamReader | None) -> bytes:
            kept = bytearray()
            assert stream is not None
            while chunk := await stream.read(65536):
                room = max(0, budget[0])
                kept += chunk[:room]
                budget[0] -= len(chunk)
                if budget[0] < 0 and not over.is_set():
                    over.set()
                    _kill(proc.pid)  # then read on to EOF so the pipe closes cleanly
            return bytes(kept)

        readers = asyncio.gather(drain(proc.stdout), drain(proc.stderr))
        timed_out = False
        try:
            out, err = await asyncio.wait_for(asyncio.shield(readers), timeout=limits.wall_s)
            await asyncio.wait_for(proc.wait(), timeout=max(0.1, limits.wall_s - (time.perf_counter() - started)))
        except TimeoutError:
            timed_out = True
            _kill(proc.pid)
            out, err = await readers
        finally:
            _kill(proc.pid)
            await proc.wait()
        stderr = err.decode("utf-8", errors="replace")
        code = proc.returncode
        limit: Limit | None = None
        if over.is_set():
            limit = "output"
        elif timed_out:
            limit = "wall"
        elif code in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL):
            limit = "cpu"
        elif "MemoryError" in stderr or "Cannot allocate memory" in stderr:
            limit = "memory"
        elif "Resource temporarily unavailable" in stderr and ("fork" in stderr or "BlockingIOError" in stderr):
            limit = "processes"
        return SandboxResult(
            exit_code=code,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=stderr,
            duration_s=time.perf_counter() - started,
            limit_hit=limit,
        )


def _prepare(workdir: Path, code: str, files: dict[str, str]) -> tuple[int, int]:
    """Write the files; return the uid to run as and how many processes it already has."""
    (workdir / "main.py").write_text(code, encoding="utf-8")
    for name, content in files.items():
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    if os.geteuid() != 0:
        return os.getuid(), _processes_of(os.getuid())
    uid = secrets.choice(RUN_UIDS)
    for path in [workdir, *workdir.rglob("*")]:
        os.chown(path, uid, uid)
    return uid, 0


def _collect(workdir: Path) -> dict[str, str]:
    """Text files the code left behind (bounded, so a run cannot flood the caller)."""
    return {
        str(p.relative_to(workdir)): p.read_text(encoding="utf-8", errors="replace")[:100_000]
        for p in workdir.rglob("*")
        if p.is_file() and p.name != "main.py" and p.stat().st_size <= 1_000_000
    }


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

"""Run untrusted generated code in a separate, fenced-off process.

Isolation comes from bubblewrap (`bwrap`): new user, network, PID, IPC and UTS namespaces (so
no network at all), a read-only view of the system directories only, size-limited in-memory
file systems as the only writable places, and a clean environment (no API keys) for bwrap
itself as well as the code. Resource limits (CPU time, address space, processes, open files,
file size) are set with `setrlimit`; wall time and output size are enforced by the parent,
which kills the whole process group. When running as root the code also drops to an
unprivileged uid, because the kernel does not apply the process limit to root.

The work dir `/sandbox` exists only inside the sandbox, so the host's disk is never written.
Before the code starts, a small launcher inside writes the input files there and hands the
caller a descriptor of the directory; the caller reads what the code left through it after
the run, opening only regular files, never following a link, within a bounded budget.

If isolation cannot be set up the sandbox fails closed with `SandboxUnavailableError`; it
never falls back to running code unfenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shoal.errors import SandboxUnavailableError

NOBODY = 65534
# As root, each run gets a uid of its own from this range: the kernel counts the process
# limit per uid, so concurrent runs must not share one.
RUN_UIDS = range(1_700_000_000, 1_700_100_000)
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc/alternatives")
# bwrap's own environment: it stays readable as /proc/1/environ inside, so nothing of ours
BWRAP_ENV = {"PATH": "/usr/bin:/bin"}
# a run that leaves a deep or huge tree costs the caller at most this much walking
MAX_DEPTH = 16
MAX_ENTRIES = 10_000
MAX_SKIPPED = 20

# Runs first inside the sandbox, before any generated code: writes the inputs into /sandbox,
# sends the caller a descriptor of it (which outlives the sandbox's mounts), closes the channel
# and becomes the code's interpreter, so the code never holds the socket.
LAUNCHER = """
import json, os, socket, sys
channel = socket.socket(fileno=int(sys.argv[1]))
data = bytearray()
while chunk := channel.recv(65536):
    data += chunk
for name, text in json.loads(data).items():
    path = os.path.join("/sandbox", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
folder = os.open("/sandbox", os.O_RDONLY | os.O_DIRECTORY)
socket.send_fds(channel, [b"."], [folder])
os.close(folder)
channel.close()
os.execv(sys.executable, [sys.executable, "-I", *sys.argv[2:]])
"""

Limit = Literal["cpu", "wall", "memory", "output", "processes"]


class SandboxLimits(BaseModel):
    cpu_s: int = Field(default=5, ge=1)
    wall_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=32)
    processes: int = Field(default=16, ge=1)
    open_files: int = Field(default=64, ge=8)
    output_bytes: int = Field(default=1_000_000, ge=1024)
    file_bytes: int = Field(default=10_000_000, ge=1024, description="largest file the code may write")
    disk_bytes: int = Field(
        default=16_000_000, ge=1_000_000, description="size of each writable place: /sandbox, /tmp, /dev/shm"
    )
    collect_files: int = Field(default=100, ge=0, description="most files brought back from /sandbox")
    collect_bytes: int = Field(default=1_000_000, ge=0, description="most bytes brought back, all files together")


class SandboxResult(BaseModel):
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    limit_hit: Limit | None = None
    files: dict[str, str] = Field(default_factory=dict, description="text files the code left behind")
    skipped: list[str] = Field(default_factory=list, description="what the code left that was not brought back, why")

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
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, preexec_fn=preexec, env=BWRAP_ENV)
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


def _run_as() -> tuple[int, int]:
    """The uid to run as and how many processes it already has."""
    if os.geteuid() != 0:
        return os.getuid(), _processes_of(os.getuid())
    return secrets.choice(RUN_UIDS), 0


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
        why = _probe(tuple(self._command(bwrap, python, ["-c", "pass"])))
        if why is not None:
            raise SandboxUnavailableError(
                f"bubblewrap cannot create a sandbox here ({why}); unprivileged user namespaces "
                "may be disabled: enable them (sysctl kernel.unprivileged_userns_clone=1) or run "
                "shoal where they are allowed. A bubblewrap too old for `--size` fails here too: "
                "upgrade it"
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

    def _command(self, bwrap: str, python: str, args: list[str]) -> list[str]:
        binds: list[str] = []
        prefix = str(Path(python).parent.parent)
        for folder in dict.fromkeys((*SYSTEM_DIRS, prefix)):
            path = Path(folder)
            if path.is_symlink():  # merged-/usr systems: /lib -> usr/lib
                binds += ["--symlink", os.readlink(path), folder]
            elif path.exists() and not any(folder.startswith(d + "/") for d in SYSTEM_DIRS):
                binds += ["--ro-bind", folder, folder]
        size = str(self.limits.disk_bytes)
        # every writable place is a tmpfs of bounded size: unbounded, each would be half the RAM
        return [
            bwrap,
            *binds,
            "--size", size, "--tmpfs", "/sandbox",
            "--size", size, "--tmpfs", "/tmp",
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", size, "--tmpfs", "/dev/shm",
            "--remount-ro", "/dev",  # --dev is an unbounded tmpfs; its device nodes stay usable
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
        self,
        code: str,
        *,
        files: dict[str, str] | None = None,
        args: list[str] | None = None,
        stdin: bytes = b"",
    ) -> SandboxResult:
        """Run `code` as `main.py` with `files` beside it and `stdin` as its input."""
        bwrap, python = self.check()
        uid, base = await asyncio.to_thread(_run_as)
        ours, theirs = socket.socketpair()
        ours.setblocking(False)  # read once the sandbox is gone: whatever is there, or nothing
        folder: int | None = None
        try:
            inputs = json.dumps({**(files or {}), "main.py": code}).encode()
            command = self._command(bwrap, python, ["-c", LAUNCHER, str(theirs.fileno()), "main.py", *(args or [])])
            preexec = functools.partial(self._preexec, uid, base)
            result = await self._execute(command, preexec, ours, theirs, inputs, stdin)
            folder = _received_folder(ours)
            if folder is None:
                result.skipped.append("the sandbox's files could not be reached: the run ended before they were")
            else:
                result.files, result.skipped = await asyncio.to_thread(_collect, folder, self.limits)
            return result
        finally:
            ours.close()
            theirs.close()
            if folder is not None:
                os.close(folder)  # the last reference to the sandbox's tmpfs: its memory goes back

    async def _execute(
        self,
        command: list[str],
        preexec: Callable[[], None],
        ours: socket.socket,
        theirs: socket.socket,
        inputs: bytes,
        stdin: bytes,
    ) -> SandboxResult:
        limits = self.limits
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec,
            pass_fds=(theirs.fileno(),),
            env=BWRAP_ENV,
        )
        theirs.close()  # only the sandbox holds that end now: its exit ends the channel
        budget = [limits.output_bytes]
        over = asyncio.Event()

        async def feed() -> None:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_sendall(ours, inputs)
                ours.shutdown(socket.SHUT_WR)
            assert proc.stdin is not None
            with contextlib.suppress(OSError):  # code that never reads its input closes the pipe
                proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()

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

        feeder = asyncio.create_task(feed())
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
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
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


def _received_folder(ours: socket.socket) -> int | None:
    """The descriptor of /sandbox the launcher sent, if it got that far."""
    try:
        _, fds, _, _ = socket.recv_fds(ours, 16, 4)
    except OSError:  # nothing was sent: the launcher died first
        return None
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else None


def _collect(root: int, limits: SandboxLimits) -> tuple[dict[str, str], list[str]]:
    """Regular files under `root` and what was left, within the limits.

    The tree belongs to the code, so each name is opened relative to its directory's descriptor
    with O_NOFOLLOW: a link (to /etc/shadow, /proc/self/environ, a host folder) is reported,
    never read, and nothing outside the sandbox's own file system is accepted.
    """
    files: dict[str, str] = {}
    skipped: list[str] = []
    left = [limits.collect_bytes, MAX_ENTRIES]  # bytes, entries
    more = [0]
    device = os.fstat(root).st_dev

    def skip(why: str) -> None:
        if len(skipped) < MAX_SKIPPED:
            skipped.append(why)
        else:
            more[0] += 1

    def walk(folder: int, prefix: str, depth: int) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                # names are the code's bytes: keep them printable and serialisable
                name = prefix + entry.name.encode(errors="surrogateescape").decode(errors="replace")
                left[1] -= 1
                if left[1] < 0:
                    return
                if name == "main.py":
                    continue
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                try:
                    fd = os.open(entry.name, flags, dir_fd=folder)
                except OSError as exc:
                    skip(f"{name}: a link, not followed" if exc.errno == errno.ELOOP else f"{name}: {exc.strerror}")
                    continue
                try:
                    found = os.fstat(fd)
                    if found.st_dev != device:
                        skip(f"{name}: outside the sandbox's work dir")
                    elif stat.S_ISDIR(found.st_mode):
                        if depth < MAX_DEPTH:
                            walk(fd, name + "/", depth + 1)
                        else:
                            skip(f"{name}: deeper than {MAX_DEPTH} folders")
                    elif not stat.S_ISREG(found.st_mode):
                        skip(f"{name}: not a regular file")
                    elif len(files) >= limits.collect_files:
                        skip(f"{name}: over the limit of {limits.collect_files} files")
                    elif found.st_size > left[0]:
                        skip(f"{name}: {found.st_size} bytes, over the limit of {limits.collect_bytes} bytes in all")
                    else:
                        data = _read(fd, found.st_size)
                        left[0] -= len(data)
                        files[name] = data.decode("utf-8", errors="replace")
                finally:
                    os.close(fd)

    walk(root, "", 0)
    if more[0]:
        skipped.append(f"and {more[0]} more not brought back")
    if left[1] < 0:
        skipped.append(f"stopped looking after {MAX_ENTRIES} entries: nothing further was brought back")
    return files, skipped


def _read(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size and (chunk := os.read(fd, min(65536, size - len(data)))):
        data += chunk
    return bytes(data)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

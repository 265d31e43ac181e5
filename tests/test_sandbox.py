"""Generated code is contained: each attack below is stopped and reported, the caller unharmed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.specialists.sandbox import Sandbox, SandboxLimits, SandboxUnavailableError


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(SandboxLimits(cpu_s=2, wall_s=4, memory_mb=256, processes=8, output_bytes=200_000))
    box.check()  # fails the module with the install hint when bubblewrap is missing
    return box


async def test_runs_plain_code(sandbox: Sandbox) -> None:
    result = await sandbox.run("print(sum(range(10)))")
    assert result.ok and result.stdout == "45\n"


async def test_infinite_loop_hits_cpu_limit(sandbox: Sandbox) -> None:
    result = await sandbox.run("while True:\n    pass")
    assert not result.ok and result.limit_hit in ("cpu", "wall")


async def test_sleeping_forever_hits_wall_limit(sandbox: Sandbox) -> None:
    result = await sandbox.run("import time\ntime.sleep(60)")
    assert result.limit_hit == "wall" and result.duration_s < 10


async def test_memory_bomb(sandbox: Sandbox) -> None:
    result = await sandbox.run("blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))")
    assert result.limit_hit == "memory" and "MemoryError" in result.stderr


async def test_fork_bomb(sandbox: Sandbox) -> None:
    code = "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n"
    result = await sandbox.run(code)
    assert result.limit_hit == "processes" and not result.ok
    # and nothing of it outlives the run
    after = await sandbox.run("print('still fine')")
    assert after.ok and after.stdout == "still fine\n"


async def test_writing_outside_the_work_dir(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    home = Path.home() / "shoal-sandbox-escape.txt"
    code = (
        "import pathlib\n"
        "results = []\n"
        f"for p in [{str(target)!r}, {str(home)!r}, '/etc/shoal-escape', '/usr/escape']:\n"
        "    try:\n"
        "        pathlib.Path(p).write_text('x')\n"
        "        results.append('wrote ' + p)\n"
        "    except OSError as e:\n"
        "        results.append(type(e).__name__)\n"
        "pathlib.Path('inside.txt').write_text('ok')\n"
        "print(results)\n"
    )
    result = await sandbox.run(code)
    assert "wrote" not in result.stdout, result.stdout
    assert not target.exists() and not home.exists() and not Path("/etc/shoal-escape").exists()
    assert result.files == {"inside.txt": "ok"}


async def test_no_network(sandbox: Sandbox) -> None:
    code = (
        "import socket\n"
        "for host in [('1.1.1.1', 80), ('127.0.0.1', 22)]:\n"
        "    try:\n"
        "        socket.create_connection(host, timeout=2)\n"
        "        print('connected', host)\n"
        "    except OSError as e:\n"
        "        print('blocked', e.errno)\n"
    )
    result = await sandbox.run(code)
    assert "connected" not in result.stdout and result.stdout.count("blocked") == 2


async def test_api_keys_do_not_leak(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    result = await sandbox.run("import os\nprint(os.environ.get('OPENAI_API_KEY'))\nprint(sorted(os.environ))")
    assert "sk-very-secret" not in result.stdout and result.stdout.startswith("None")
    assert "OPENAI_API_KEY" in os.environ  # the caller's environment is untouched


async def test_huge_output_is_cut(sandbox: Sandbox) -> None:
    result = await sandbox.run("import sys\nsys.stdout.write('x' * 100_000_000)")
    assert result.limit_hit == "output"
    assert len(result.stdout) <= 200_000


async def test_missing_bubblewrap_fails_closed(tmp_path: Path) -> None:
    box = Sandbox(bwrap=str(tmp_path / "no-bwrap"))
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        await box.run("print('must not run')")

"""The package's promises to library users: light import, typed, public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import shoal


def test_import_shoal_is_light() -> None:
    code = (
        "import sys, shoal, shoal.models, shoal.config, shoal.backends;"
        "heavy = [m for m in ('textual', 'llama_cpp', 'openai') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import shoal pulled in {out.stdout.strip()}"


def test_public_api_and_py_typed() -> None:
    assert (Path(shoal.__file__).parent / "py.typed").is_file()
    for name in shoal.__all__:
        assert hasattr(shoal, name), name


def test_missing_extra_names_the_install_command(monkeypatch: object) -> None:
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "from shoal.models.openai import OpenAIBackend\n"
        "try:\n    OpenAIBackend()\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'shoal[frontier]'" in out.stdout

    code = (
        "import sys, asyncio; sys.modules['llama_cpp'] = None\n"
        "from shoal.models.embedded import EmbeddedBackend\n"
        "from shoal.models.base import ChatRequest, Message\n"
        "req = ChatRequest(model='smollm2-135m', messages=[Message(role='user', content='hi')])\n"
        "try:\n    asyncio.run(EmbeddedBackend().chat(req))\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'shoal[embedded]'" in out.stdout

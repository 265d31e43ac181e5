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


async def test_the_readme_custom_specialist_works() -> None:
    from shoal.models.router import ModelRouter
    from shoal.models.scripted import ScriptedBackend
    from shoal.specialists import TextInput

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("from pydantic import BaseModel\nfrom shoal.models import Message, Reply")
    namespace: dict[str, object] = {}
    exec(readme[start : readme.index("```", start)], namespace)
    backend = ScriptedBackend(
        ['{"reply": "Sorry about that, a refund is on its way to you today."}', '{"reply": "No."}']
    )
    drafter = namespace["Drafter"](ModelRouter(lambda _: backend), "scripted:x")  # type: ignore[operator]
    good = await drafter.run(TextInput(text="where is my refund"))
    short = await drafter.run(TextInput(text="where is my refund"))
    assert good.confidence == 0.8 and short.confidence == 0.2 and "words" in short.explain()

"""Coder: Python code for a task, trusted as far as it runs and passes the task's tests.

Confidence comes from the sandbox, not from the model: code that does not parse scores 0,
code that fails to run 0.05, code that runs with no tests to check it 0.5 (it runs; nothing
says it is right), and code with tests `0.1 + 0.85 * share passed`. Every failure is evidence.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from shoal.models.base import Message, Reply
from shoal.specialists.base import Judgement, Signal, Specialist
from shoal.specialists.sandbox import Sandbox, SandboxResult


class CodeTask(BaseModel):
    task: str
    tests: list[str] = Field(default_factory=list, description="Python statements, e.g. asserts")


class Code(BaseModel):
    code: str = Field(max_length=4000)
    explanation: str = Field(default="", max_length=200)


class TestOutcome(BaseModel):
    test: str
    passed: bool
    error: str = ""


class CodeResult(Code):
    tests: list[TestOutcome] = Field(default_factory=list)
    ran: bool = False


_FENCE = re.compile(r"^\s*```(?:python|py)?\s*\n(.*?)\n?```\s*$", re.DOTALL)

_HARNESS = """
import json, sys, traceback
namespace = {"__name__": "solution"}
report = {"loaded": None, "tests": []}
try:
    exec(compile(open("solution.py", encoding="utf-8").read(), "solution.py", "exec"), namespace)
except BaseException:
    report["loaded"] = traceback.format_exc(limit=2)[-600:]
else:
    for i, test in enumerate(json.load(open("tests.json", encoding="utf-8"))):
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
            report["tests"].append({"test": test, "passed": True, "error": ""})
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            report["tests"].append({"test": test, "passed": False, "error": error})
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(report, out)
"""


class Coder(Specialist[CodeTask, CodeResult]):
    name: ClassVar[str] = "coder"
    input_type = CodeTask
    output_type = CodeResult
    default_threshold: ClassVar[float] = 0.9

    def __init__(self, router: Any, model: Any, *, sandbox: Sandbox | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("max_tokens", 768)
        super().__init__(router, model, **kwargs)
        self.sandbox = sandbox or Sandbox()

    def response_type(self) -> type[BaseModel]:
        return Code

    def wants_logprobs(self) -> bool:
        return False  # the sandbox, not token probability, is this specialist's signal

    def messages(self, data: CodeTask) -> list[Message]:
        tests = "\n".join(data.tests)
        system = (
            "Write Python 3 code that solves the task. Use only the standard library. Define "
            "functions; do not read input or print unless asked. Answer with JSON: "
            '{"code": "...", "explanation": "..."}.'
        )
        user = data.task + (f"\nThe code must pass these tests:\n{tests}" if tests else "")
        return [Message(role="system", content=system), Message(role="user", content=user)]

    async def judge(self, data: CodeTask, reply: Reply) -> Judgement[CodeResult]:
        parsed = reply.parsed
        assert isinstance(parsed, Code)
        code = parsed.code
        fenced = _FENCE.match(code)
        if fenced:
            code = fenced.group(1)
        result = CodeResult(code=code, explanation=parsed.explanation)
        try:
            ast.parse(code)
        except SyntaxError as exc:
            return Judgement(
                output=result,
                confidence=0.0,
                evidence=[Signal(name="parses", value=0.0, detail=f"SyntaxError line {exc.lineno}: {exc.msg}")],
            )
        marker = f".report-{secrets.token_hex(8)}.json"
        run = await self.sandbox.run(
            _HARNESS, files={"solution.py": code, "tests.json": json.dumps(data.tests)}, args=[marker]
        )
        return self._score(result, run, marker, has_tests=bool(data.tests))

    @staticmethod
    def _score(result: CodeResult, run: SandboxResult, marker: str, *, has_tests: bool) -> Judgement[CodeResult]:
        evidence = [Signal(name="parses", value=1.0, detail="valid Python")]
        raw = run.files.get(marker)
        if raw is None:
            why = run.describe() + (f": {run.stderr.strip()[-300:]}" if run.stderr.strip() else "")
            evidence.append(Signal(name="runs", value=0.0, detail=f"the sandbox run did not finish ({why})"))
            return Judgement(output=result, confidence=0.05, evidence=evidence)
        report = json.loads(raw)
        result.ran = report["loaded"] is None
        if not result.ran:
            evidence.append(Signal(name="runs", value=0.0, detail=report["loaded"].strip().splitlines()[-1]))
            return Judgement(output=result, confidence=0.05, evidence=evidence)
        evidence.append(Signal(name="runs", value=1.0, detail=f"loaded in {run.duration_s:.2f}s"))
        result.tests = [TestOutcome.model_validate(t) for t in report["tests"]]
        if not has_tests:
            evidence.append(Signal(name="tests", value=0.5, detail="no tests given: it runs, nothing checks it"))
            return Judgement(output=result, confidence=0.5, evidence=evidence)
        passed = sum(t.passed for t in result.tests)
        failed = [f"{t.test} -> {t.error}" for t in result.tests if not t.passed]
        share = passed / len(result.tests)
        evidence.append(
            Signal(
                name="tests",
                value=share,
                detail=f"{passed}/{len(result.tests)} passed"
                + ("; failed: " + " | ".join(failed[:5]) if failed else ""),
            )
        )
        return Judgement(output=result, confidence=0.1 + 0.85 * share, evidence=evidence)

"""Coder: Python code for a task, trusted as far as it runs and passes the task's tests.

Confidence comes from the sandbox, not from the model: code that does not parse scores 0,
code that fails to run 0.05, code that runs with no tests to check it 0.5 (it runs; nothing
says it is right), and code with tests `0.1 + 0.85 * share passed`. Every failure is evidence.

The verdict must not be the code's to write. The harness reads a random per-run nonce and the
tests from stdin before the solution exists, keeps everything it needs in its own locals, moves
the solution's stdout to stderr and reports each step on the original stdout, every line
stamped with the nonce. The caller believes only well-formed, stamped lines in the expected
order: a report rewritten at exit, an `os._exit` before the tests, a patched reporter or lines
the harness did not write all leave tests without a result, and a test without a result fails.
Code that digs the nonce out of the harness's frame could still forge one; nothing cheaper can.
"""

from __future__ import annotations

import ast
import json
import secrets
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shoal.models.base import Message, Reply, unfence
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


# Everything `main` uses is bound as a default argument before the solution runs, so patching
# builtins or modules from the solution cannot change what the harness does or reports.
_HARNESS = """
import json, os, sys, traceback

def main(exec=exec, compile=compile, enumerate=enumerate, type=type, BaseException=BaseException,
         write=os.write, dup=os.dup, dup2=os.dup2, dumps=json.dumps, format_exc=traceback.format_exc):
    order = json.loads(sys.stdin.buffer.read())
    nonce, tests = order["nonce"], tuple(order["tests"])
    del order
    channel = dup(1)
    dup2(2, 1)

    def report(event):
        event["nonce"] = nonce
        write(channel, (dumps(event) + "\\n").encode())

    namespace = {"__name__": "solution"}
    try:
        with open("solution.py", encoding="utf-8") as source:
            exec(compile(source.read(), "solution.py", "exec"), namespace)
    except BaseException:
        report({"event": "load-failed", "error": format_exc(limit=2)[-600:]})
        return
    report({"event": "loaded"})
    for i, test in enumerate(tests):
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
        except BaseException as exc:
            report({"event": "test", "index": i, "passed": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
        else:
            report({"event": "test", "index": i, "passed": True, "error": ""})

main()
"""


class _Loaded(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str
    event: Literal["loaded"]


class _LoadFailed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str
    event: Literal["load-failed"]
    error: str


class _Tested(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str
    event: Literal["test"]
    index: int
    passed: bool
    error: str


_Event = Annotated[_Loaded | _LoadFailed | _Tested, Field(discriminator="event")]
_EVENTS: TypeAdapter[_Loaded | _LoadFailed | _Tested] = TypeAdapter(_Event)


class _BadReport(ValueError):
    """The harness's channel holds something the harness did not write."""


def _read_report(stdout: str, nonce: str, tests: int) -> list[_Loaded | _LoadFailed | _Tested]:
    """The harness's events, in order; `_BadReport` if anything on the channel is not one."""
    events: list[_Loaded | _LoadFailed | _Tested] = []
    # the harness writes whole lines at once: an unterminated tail was cut by a limit, never a verdict
    for number, line in enumerate(stdout.split("\n")[:-1], 1):
        try:
            event = _EVENTS.validate_json(line)
        except ValidationError as exc:
            raise _BadReport(f"line {number} is not a harness event ({exc.errors()[0]['msg']})") from None
        if event.nonce != nonce:
            raise _BadReport(f"line {number} lacks this run's nonce: the code wrote it, not the harness")
        if not events:
            if isinstance(event, _Tested):
                raise _BadReport(f"line {number} is a test result before the solution loaded")
        elif (
            not isinstance(events[0], _Loaded)
            or not isinstance(event, _Tested)
            or event.index != len(events) - 1
            or event.index >= tests
        ):
            raise _BadReport(f"line {number} is out of order: the result of test {len(events) - 1} was due")
        events.append(event)
    return events


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
        fenced = unfence(parsed.code, ("python", "py"), code=True)  # linear time, unlike a regex
        code = parsed.code if fenced is None else fenced
        result = CodeResult(code=code, explanation=parsed.explanation)
        try:
            ast.parse(code)
        except SyntaxError as exc:
            return Judgement(
                output=result,
                confidence=0.0,
                evidence=[Signal(name="parses", value=0.0, detail=f"SyntaxError line {exc.lineno}: {exc.msg}")],
            )
        nonce = secrets.token_hex(16)
        order = json.dumps({"nonce": nonce, "tests": data.tests}).encode()
        run = await self.sandbox.run(_HARNESS, files={"solution.py": code}, stdin=order)
        return self._score(result, run, nonce, data.tests)

    @staticmethod
    def _score(result: CodeResult, run: SandboxResult, nonce: str, tests: list[str]) -> Judgement[CodeResult]:
        evidence = [Signal(name="parses", value=1.0, detail="valid Python")]
        try:
            events = _read_report(run.stdout, nonce, len(tests))
        except _BadReport as exc:
            evidence.append(Signal(name="report", value=0.0, detail=f"the test report cannot be trusted: {exc}"))
            return Judgement(output=result, confidence=0.05, evidence=evidence)
        first = events[0] if events else None
        if not isinstance(first, _Loaded):
            if isinstance(first, _LoadFailed):
                why = (first.error.strip().splitlines() or ["it failed to load"])[-1]
            else:
                stderr = run.stderr.strip()
                why = f"the run ended before the solution loaded ({run.describe()}" + (
                    f": {stderr[-300:]})" if stderr else ")"
                )
            evidence.append(Signal(name="runs", value=0.0, detail=why))
            return Judgement(output=result, confidence=0.05, evidence=evidence)
        result.ran = True
        evidence.append(Signal(name="runs", value=1.0, detail=f"loaded in {run.duration_s:.2f}s"))
        if not tests:
            evidence.append(Signal(name="tests", value=0.5, detail="no tests given: it runs, nothing checks it"))
            return Judgement(output=result, confidence=0.5, evidence=evidence)
        reported = {e.index: e for e in events if isinstance(e, _Tested)}
        missing = f"no result: the run ended before this test finished ({run.describe()})"
        result.tests = [
            TestOutcome(test=test, passed=reported[i].passed, error=reported[i].error)
            if i in reported
            else TestOutcome(test=test, passed=False, error=missing)
            for i, test in enumerate(tests)
        ]
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

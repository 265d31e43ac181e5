"""Specialists: typed units of work, each with its own honest confidence signal.

A subclass states only what is specific to it: the prompt (`messages`), the JSON the model
should emit (`response_type`), and how to turn a reply into an output with a confidence
(`judge`). The base class makes the model call, collects every call made, and turns a reply
that cannot be used into a zero-confidence result, so a bad answer is escalated, never a crash.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

from shoal.errors import InvalidRequestError, ModelError, SchemaValidationError
from shoal.models.base import ChatRequest, Message, ModelRef, Reply
from shoal.models.router import CallRecord, ModelRouter, Recorder
from shoal.specialists.tokens import unusable_logprobs

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class Signal(BaseModel):
    """One piece of evidence behind a confidence, worded for a person."""

    name: str
    value: float = Field(description="the signal's own score in [0, 1]")
    detail: str = ""

    @model_validator(mode="before")
    @classmethod
    def _finite_value(cls, data: Any) -> Any:
        """A NaN or infinite score is no score: 0, with what it was kept in the detail."""
        value = data.get("value") if isinstance(data, dict) else None
        if isinstance(value, float) and not math.isfinite(value):
            was = f"computed as {value!r}, not a number: scored 0"
            detail = data.get("detail") or ""
            data = {**data, "value": 0.0, "detail": f"{detail}; {was}" if detail else was}
        return data

    def __str__(self) -> str:
        return f"{self.name}={self.value:.2f}" + (f" ({self.detail})" if self.detail else "")


class Judgement(BaseModel, Generic[Out]):
    """What a specialist concludes from one reply.

    The confidence is always a finite number in [0, 1], never a reason for the judgement to
    fail: float rounding just past 0 or 1 is clamped; a value further out is clamped, and NaN
    or inf (a signal computed from broken inputs) becomes 0, each with a `confidence` signal
    that says what the specialist's signals gave.
    """

    output: Out | None
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[Signal] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _usable_confidence(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "confidence" not in data:
            return data
        value = data["confidence"]
        if not isinstance(value, int | float) or isinstance(value, bool):
            return data  # not a number at all: a bug in the specialist, for validation to report
        usable = clamp(value)
        if abs(usable - value) <= 1e-9:  # float rounding just past 0 or 1 (or nothing to do)
            return {**data, "confidence": usable}
        why = Signal(
            name="confidence",
            value=0.0 if not math.isfinite(value) else usable,
            detail=f"the signals gave a confidence of {value!r}, not a number in [0, 1]: "
            + ("scored 0" if not math.isfinite(value) else f"clamped to {usable:g}"),
        )
        return {**data, "confidence": usable, "evidence": [*data.get("evidence", []), why]}


class Result(BaseModel, Generic[Out]):
    """A specialist's answer: the output, how sure it is, why, and the calls it took."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    specialist: str
    model: str
    output: Out | None
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[Signal] = Field(default_factory=list)
    calls: list[CallRecord] = Field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.output is not None and self.error is None

    @property
    def cost_usd(self) -> float:
        return sum(c.reply.cost_usd for c in self.calls if c.reply is not None)

    def explain(self) -> str:
        return "; ".join(str(s) for s in self.evidence) or (self.error or "no evidence")


def max_length(info: FieldInfo) -> int | None:
    """The `max_length` a pydantic field declares, if any."""
    for rule in info.metadata:
        limit = getattr(rule, "max_length", None)
        if isinstance(limit, int):
            return limit
    return None


def clamp(value: float) -> float:
    """`value` within [0, 1]; NaN and infinities, which are no evidence of anything, are 0."""
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, value))


class Specialist(ABC, Generic[In, Out]):
    """Subclass this to add a specialist. See `shoal.specialists.classifier` for a full one."""

    name: ClassVar[str]
    input_type: type[In]
    output_type: type[Out]
    default_threshold: ClassVar[float] = 0.7

    def __init__(
        self,
        router: ModelRouter,
        model: ModelRef | str,
        *,
        threshold: float | None = None,
        max_tokens: int = 256,
        name: str | None = None,
    ) -> None:
        self.router = router
        self.model = ModelRef.parse(model)
        self.threshold = self.default_threshold if threshold is None else threshold
        self.max_tokens = max_tokens
        if name is not None:  # two classifiers in one shoal need two names
            self.name = name  # type: ignore[misc]

    # --- what a subclass states -------------------------------------------------------------

    @abstractmethod
    def messages(self, data: In) -> list[Message]:
        """The prompt for one input."""

    @abstractmethod
    def response_type(self) -> type[BaseModel]:
        """The JSON shape the model is constrained to emit."""

    @abstractmethod
    async def judge(self, data: In, reply: Reply) -> Judgement[Out]:
        """Turn a parsed reply into an output, a confidence and its evidence."""

    def wants_logprobs(self) -> bool:
        return True

    # --- what the base class does -----------------------------------------------------------

    def request(self, data: In, *, temperature: float = 0.0, seed: int | None = None) -> ChatRequest:
        return ChatRequest(
            model=self.model.name,
            messages=self.messages(data),
            output_schema=self.response_type(),
            temperature=temperature,
            seed=seed,
            max_tokens=self.max_tokens,
            logprobs=self.wants_logprobs(),
            top_logprobs=20 if self.wants_logprobs() else 0,
        )

    async def run(
        self,
        data: In | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[Out]:
        """Run once on `model` (default: the specialist's own) and judge the reply.

        Model failures that retrying will not fix (a reply that breaks the schema, a request
        the model cannot take) become a zero-confidence result with the reason as evidence;
        an unreachable or misconfigured backend still raises, since no answer exists to judge.
        """
        item = data if isinstance(data, BaseModel) else self.input_type.model_validate(data)
        ref = ModelRef.parse(model) if model is not None else self.model
        calls: list[CallRecord] = []
        upstream = self.router.recorder

        async def collect(record: CallRecord) -> None:
            calls.append(record)
            if upstream is not None:
                await upstream(record)

        recorder: Recorder = collect
        request = self.request(item, temperature=temperature, seed=seed)
        try:
            reply = await self.router.chat(ref, request, recorder=recorder)
        except SchemaValidationError as exc:
            if exc.cut_off:
                return self._failed(ref, calls, "cut_off", self._max_tokens_hint())
            return self._failed(ref, calls, "schema", f"reply is not a valid answer: {exc}")
        except InvalidRequestError as exc:  # e.g. the input does not fit the model's context
            return self._failed(ref, calls, "request", str(exc))
        cut = self.cut_off(reply)
        if cut:  # a text stopped at a limit says less than it meant: never a confident answer
            return self._failed(ref, calls, "cut_off", cut)
        try:
            judgement = await self.judge(item, reply)
        except ModelError as exc:
            return self._failed(ref, calls, "judge", str(exc))
        evidence = list(judgement.evidence)
        bad, total = unusable_logprobs(reply.logprobs) if self.wants_logprobs() else (0, 0)
        if bad:  # they were left out of the confidence; say so, since it rests on less than it seems
            evidence.append(
                Signal(
                    name="usable_logprobs",
                    value=1 - bad / total,
                    detail=f"{bad} of {total} token log-probabilities from {ref} were not usable numbers "
                    "(NaN, infinite or above 0) and were left out",
                )
            )
        return Result[Out](
            specialist=self.name,
            model=str(ref),
            output=judgement.output,
            confidence=clamp(judgement.confidence),
            evidence=evidence,
            calls=calls,
        )

    def cut_off(self, reply: Reply) -> str | None:
        """Why the reply is a text stopped at a limit (`max_tokens`, or a string field that
        reached its `max_length`, where constrained decoding ends it mid-word), or None."""
        if reply.finish_reason == "length":
            return self._max_tokens_hint()
        parsed = reply.parsed
        if not isinstance(parsed, BaseModel):
            return None
        for field, info in type(parsed).model_fields.items():
            value = getattr(parsed, field)
            limit = max_length(info)
            if isinstance(value, str) and limit is not None and len(value) >= limit:
                return f"{field} was cut at its limit of {limit} characters: a text cut short is not an answer"
        return None

    def _max_tokens_hint(self) -> str:
        return (
            f"the reply was cut off at max_tokens ({self.max_tokens}) before it was complete: raise it in "
            f"shoal.toml with [specialists.{self.name}] max_tokens = {self.max_tokens * 2}"
        )

    async def local_call(self, ref: ModelRef, text: str, output: BaseModel, latency_s: float) -> CallRecord:
        """An answer made without a chat model (a trained head, a knowledge lookup) recorded as
        a call of the model whose embeddings it read, so `shoal show` lists what answered and
        how fast like any other call."""
        record = CallRecord(
            ref=ref,
            request=ChatRequest(model=ref.name, messages=[Message(role="user", content=text)], max_tokens=1),
            reply=Reply(
                text=output.model_dump_json(),
                parsed=output,
                latency_s=latency_s,
                model=ref.name,
                backend=ref.backend,
            ),
            latency_s=latency_s,
        )
        if self.router.recorder is not None:
            await self.router.recorder(record)
        return record

    def _failed(self, ref: ModelRef, calls: list[CallRecord], signal: str, why: str) -> Result[Out]:
        return Result[Out](
            specialist=self.name,
            model=str(ref),
            output=None,
            confidence=0.0,
            evidence=[Signal(name=signal, value=0.0, detail=why)],
            calls=calls,
            error=why,
        )

    def as_node(
        self, *, input_key: str = "text", output_key: str | None = None
    ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        """This specialist as a node of your own LangGraph `StateGraph`.

        The node reads `state[input_key]` (text, or a dict of the specialist's input fields)
        and writes `state[output_key]` (default: the specialist's name) as a dict with the
        output, the confidence and the evidence, so later nodes can branch on confidence.
        """
        key = output_key or self.name
        field = next(iter(self.input_type.model_fields))

        async def node(state: dict[str, Any]) -> dict[str, Any]:
            value = state[input_key]
            result = await self.run(value if isinstance(value, dict) else {field: value})
            return {
                key: {
                    "output": None if result.output is None else result.output.model_dump(mode="json"),
                    "confidence": result.confidence,
                    "evidence": [str(s) for s in result.evidence],
                    "model": result.model,
                }
            }

        node.__name__ = f"{self.name}_node"
        return node

    def check_answer(self, output: Out) -> None:
        """Raise ValueError when a person's (or a frontier's) answer cannot be right for this
        specialist beyond what its output type says (e.g. a label outside the set)."""

    def labelled_example(self, data: In, output: Out) -> tuple[str, str] | None:
        """(text, label) that an escalated answer teaches this specialist, or None.

        Specialists that can be trained from examples override this; the engine stores what it
        returns for answers the frontier or a person gave, and `shoal train` learns from them.
        """
        return None

    @property
    def resamplable(self) -> bool:
        """Whether asking again at a temperature can give a different answer (self-consistency)."""
        return True

    def agree(self, a: Out, b: Out) -> bool:
        """Whether two outputs count as the same answer (for self-consistency resampling)."""
        return a.model_dump(mode="json") == b.model_dump(mode="json")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model='{self.model}', threshold={self.threshold})"

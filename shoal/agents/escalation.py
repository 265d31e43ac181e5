"""The escalation ladder: small model -> resampling -> frontier -> human, with budgets.

A specialist's answer at or above its threshold is accepted and nothing else runs; the
frontier is never called for it. Below the threshold the ladder climbs one rung at a time
and stops at the first rung that gives an answer it can trust. Every rung taken produces an
`Escalation` record (reason, confidence before and after, model, cost), handed to
`on_escalation` so the engine can store it; the ladder itself knows no database.

The human rung does not wait here: it returns an outcome with status `needs_human`, and the
graph pauses durably (LangGraph `interrupt()`) until a person answers; `answer_by_human`
then turns the answer into the final result.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shoal.errors import ModelError, SchemaValidationError
from shoal.models.base import ChatRequest, Message, ModelRef, Reply
from shoal.models.router import ModelRouter, Recorder
from shoal.privacy import PLACEHOLDER_NOTE, PrivacySettings, Redaction, Redactor
from shoal.specialists.base import Result, Signal, Specialist
from shoal.status import AnsweredBy, EscalationOutcome, LadderStatus
from shoal.status import Rung as Rung  # re-exported: the ladder's rungs were first defined here

Out = TypeVar("Out", bound=BaseModel)


class Escalation(BaseModel):
    specialist: str
    rung: Rung
    reason: str
    confidence_before: float
    confidence_after: float | None = None
    model: str | None = None
    cost_usd: float = 0.0
    outcome: EscalationOutcome
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # kind -> how many values were withheld from the frontier on this rung (never the values):
    # {} when [privacy] found nothing to withhold, None when it was off or nothing was sent
    redacted: dict[str, int] | None = None


class LadderConfig(BaseModel):
    threshold: float = Field(ge=0.0, le=1.0)
    resample: int = Field(default=0, ge=0, le=20, description="extra samples for self-consistency")
    resample_temperature: float = Field(default=0.8, gt=0.0, le=2.0)
    frontier: str | None = Field(default=None, description="ModelRef of the frontier tier")
    frontier_unavailable: str | None = Field(
        default=None, description="why the frontier cannot be asked (e.g. no API key): the rung is skipped"
    )
    frontier_min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="the frontier's answer is trusted above this"
    )
    human: bool = True
    privacy: PrivacySettings = Field(
        default_factory=PrivacySettings, description="what is withheld from the frontier (on by default)"
    )


class SpendLedger(Protocol):
    """Frontier spend per day; the engine's implementation lives in the store."""

    async def spent_today(self) -> float: ...

    async def add(self, cost_usd: float) -> None: ...


class MemoryLedger:
    def __init__(self) -> None:
        self.by_day: dict[str, float] = {}

    async def spent_today(self) -> float:
        return self.by_day.get(datetime.now(UTC).date().isoformat(), 0.0)

    async def add(self, cost_usd: float) -> None:
        day = datetime.now(UTC).date().isoformat()
        self.by_day[day] = self.by_day.get(day, 0.0) + cost_usd


class Budget:
    """Frontier spend limits for one run (and, through the ledger, for the day)."""

    def __init__(
        self,
        *,
        per_run_usd: float | None = None,
        per_day_usd: float | None = None,
        ledger: SpendLedger | None = None,
    ) -> None:
        self.per_run_usd = per_run_usd
        self.per_day_usd = per_day_usd
        self.ledger: SpendLedger = ledger or MemoryLedger()
        self.run_spent = 0.0
        self._lock = asyncio.Lock()

    async def refusal(self) -> str | None:
        """Why the frontier may not be called now, or None when it may."""
        if self.per_run_usd is not None and self.run_spent >= self.per_run_usd:
            return f"run frontier budget spent (${self.run_spent:.4f} of ${self.per_run_usd:.4f})"
        if self.per_day_usd is not None:
            today = await self.ledger.spent_today()
            if today >= self.per_day_usd:
                return f"daily frontier budget spent (${today:.4f} of ${self.per_day_usd:.4f})"
        return None

    async def charge(self, cost_usd: float) -> None:
        async with self._lock:
            self.run_spent += cost_usd
            await self.ledger.add(cost_usd)


class Outcome(BaseModel, Generic[Out]):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    status: LadderStatus
    answered_by: AnsweredBy | None  # never UNVERIFIED: that marks a step row, not a climb
    result: Result[Out]
    first: Result[Out]
    escalations: list[Escalation] = Field(default_factory=list)

    @property
    def output(self) -> Out | None:
        return self.result.output if self.status in (LadderStatus.ACCEPTED, LadderStatus.ESCALATED) else None


EscalationHook = Callable[[Escalation], Awaitable[None]]


class Ladder:
    def __init__(
        self,
        config: LadderConfig,
        *,
        budget: Budget | None = None,
        on_escalation: EscalationHook | None = None,
    ) -> None:
        self.config = config
        self.budget = budget or Budget()
        self.on_escalation = on_escalation
        self.redactor = Redactor.from_settings(config.privacy)
        if config.frontier is not None:
            ModelRef.parse(config.frontier)

    async def _record(self, escalations: list[Escalation], item: Escalation) -> None:
        escalations.append(item)
        if self.on_escalation is not None:
            await self.on_escalation(item)

    async def run(self, specialist: Specialist[Any, Out], data: Any) -> Outcome[Out]:
        threshold = self.config.threshold
        first = await specialist.run(data)
        if first.ok and first.confidence >= threshold:
            return Outcome(status=LadderStatus.ACCEPTED, answered_by=AnsweredBy.SPECIALIST, result=first, first=first)
        return await self.climb(specialist, data, first)

    async def climb(self, specialist: Specialist[Any, Out], data: Any, first: Result[Out]) -> Outcome[Out]:
        """The rungs above the specialist, for an answer already known to be below threshold."""
        threshold = self.config.threshold
        escalations: list[Escalation] = []
        why = (
            f"confidence {first.confidence:.2f} below threshold {threshold:.2f}"
            if first.ok
            else f"no usable answer: {first.error}"
        )
        best = first

        if self.config.resample and first.ok and specialist.resamplable:
            voted = await self._resample(specialist, data, first)
            await self._record(
                escalations,
                Escalation(
                    specialist=specialist.name,
                    rung=Rung.RESAMPLE,
                    reason=why,
                    confidence_before=first.confidence,
                    confidence_after=voted.confidence,
                    model=str(specialist.model),
                    cost_usd=voted.cost_usd,
                    outcome=EscalationOutcome.ACCEPTED if voted.confidence >= threshold else EscalationOutcome.REJECTED,
                ),
            )
            if voted.confidence >= threshold:
                return Outcome(
                    status=LadderStatus.ESCALATED,
                    answered_by=AnsweredBy.RESAMPLE,
                    result=voted,
                    first=first,
                    escalations=escalations,
                )
            best = voted
            why = f"resampling agreement {voted.confidence:.2f} below threshold {threshold:.2f}"

        if self.config.frontier is not None:
            refusal = self.config.frontier_unavailable or await self.budget.refusal()
            if refusal is not None:
                await self._record(
                    escalations,
                    Escalation(
                        specialist=specialist.name,
                        rung=Rung.FRONTIER,
                        reason=f"{why}; frontier skipped: {refusal}",
                        confidence_before=best.confidence,
                        model=self.config.frontier,
                        outcome=EscalationOutcome.SKIPPED,
                    ),
                )
                why = f"{why}; {refusal}"
            else:
                upper, redacted = await self._frontier(specialist, data)
                await self.budget.charge(upper.cost_usd)
                trusted = upper.ok and upper.confidence >= self.config.frontier_min_confidence
                await self._record(
                    escalations,
                    Escalation(
                        specialist=specialist.name,
                        rung=Rung.FRONTIER,
                        reason=why,
                        confidence_before=best.confidence,
                        confidence_after=upper.confidence if upper.ok else None,
                        model=self.config.frontier,
                        cost_usd=upper.cost_usd,
                        outcome=EscalationOutcome.ACCEPTED if trusted else EscalationOutcome.REJECTED,
                        redacted=redacted,
                    ),
                )
                if trusted:
                    return Outcome(
                        status=LadderStatus.ESCALATED,
                        answered_by=AnsweredBy.FRONTIER,
                        result=upper,
                        first=first,
                        escalations=escalations,
                    )
                why = f"{why}; frontier gave no usable answer ({upper.error or upper.explain()})"

        if self.config.human:
            await self._record(
                escalations,
                Escalation(
                    specialist=specialist.name,
                    rung=Rung.HUMAN,
                    reason=why,
                    confidence_before=best.confidence,
                    outcome=EscalationOutcome.PENDING,
                ),
            )
            return Outcome(
                status=LadderStatus.NEEDS_HUMAN, answered_by=None, result=best, first=first, escalations=escalations
            )
        return Outcome(status=LadderStatus.FAILED, answered_by=None, result=best, first=first, escalations=escalations)

    async def _resample(self, specialist: Specialist[Any, Out], data: Any, first: Result[Out]) -> Result[Out]:
        """Self-consistency: k more samples at a temperature; agreement with the majority."""
        k = self.config.resample
        samples = [first]
        for seed in range(1, k + 1):  # sequential: a local model serves one call at a time anyway
            samples.append(await specialist.run(data, temperature=self.config.resample_temperature, seed=seed))
        usable = [s for s in samples if s.ok and s.output is not None]
        calls = [c for s in samples[1:] for c in s.calls]
        if not usable:
            return first.model_copy(update={"calls": calls, "confidence": 0.0})
        groups: list[list[Result[Out]]] = []
        for sample in usable:
            for group in groups:
                assert sample.output is not None and group[0].output is not None
                if specialist.agree(group[0].output, sample.output):
                    group.append(sample)
                    break
            else:
                groups.append([sample])
        majority = max(groups, key=len)
        agreement = len(majority) / len(samples)
        return majority[0].model_copy(
            update={
                "confidence": agreement,
                "calls": calls,
                "evidence": [
                    Signal(
                        name="agreement",
                        value=agreement,
                        detail=f"{len(majority)}/{len(samples)} samples gave this answer",
                    ),
                    *majority[0].evidence,
                ],
            }
        )

    async def _frontier(self, specialist: Specialist[Any, Out], data: Any) -> tuple[Result[Out], dict[str, int] | None]:
        """The frontier's answer, and how many values of each kind were withheld from it.

        With `[privacy]` on, the specialist runs on a copy whose router redacts every prompt
        it sends and restores the reply before the specialist judges it: the judge (grounding
        included) reads the original input and the restored answer."""
        assert self.config.frontier is not None
        asking = specialist
        redaction = None
        if self.redactor is not None:
            redaction = self.redactor.session()
            asking = copy.copy(specialist)
            asking.router = RedactingRouter(specialist.router, redaction)
        try:
            result = await asking.run(data, model=self.config.frontier)
            return result, None if redaction is None else redaction.counts
        except ModelError as exc:  # an unreachable frontier is a rung that failed, not a crash
            return Result[Out](
                specialist=specialist.name,
                model=self.config.frontier,
                output=None,
                confidence=0.0,
                evidence=[Signal(name="frontier", value=0.0, detail=str(exc))],
                error=str(exc),
            ), None if redaction is None else redaction.counts


class RedactingRouter(ModelRouter):
    """A router that withholds private values from every chat request it sends (placeholders
    instead) and puts them back into the reply. Its backends are the inner router's; the calls
    it records hold the redacted prompt and the reply as the model gave it, so a stored frontier
    call keeps no withheld value either."""

    def __init__(self, inner: ModelRouter, redaction: Redaction) -> None:
        super().__init__(inner.backend, inner.recorder)
        self.redaction = redaction

    async def chat(self, ref: ModelRef | str, request: ChatRequest, *, recorder: Recorder | None = None) -> Reply:
        redaction = self.redaction
        texts = redaction.redact_all([m.content for m in request.messages])
        messages = [m.model_copy(update={"content": t}) for m, t in zip(request.messages, texts, strict=True)]
        if redaction.originals:
            if messages[0].role == "system":
                messages[0] = messages[0].model_copy(update={"content": f"{messages[0].content}\n{PLACEHOLDER_NOTE}"})
            else:
                messages.insert(0, Message(role="system", content=PLACEHOLDER_NOTE))
        reply = await super().chat(ref, request.model_copy(update={"messages": messages}), recorder=recorder)
        if not redaction.originals:
            return reply
        try:
            parsed = None if reply.parsed is None else redaction.restore_model(reply.parsed)
        except ValueError as exc:  # a restored value breaks the schema (e.g. its max_length)
            raise SchemaValidationError(
                f"the answer does not validate once its withheld values are put back: {exc}",
                raw_text=reply.text,
                model=reply.ref,
            ) from None
        # token log-probabilities stay as generated (they spell the placeholders)
        return reply.model_copy(update={"text": redaction.restore_text(reply.text), "parsed": parsed})


def answer_by_human(outcome: Outcome[Out], answer: Out, *, who: str = "a person") -> Outcome[Out]:
    """The final outcome once a person has answered an item on the human rung."""
    result = outcome.result.model_copy(
        update={
            "output": answer,
            "confidence": 1.0,
            "error": None,
            "model": f"human:{who}",
            "evidence": [Signal(name="human", value=1.0, detail=f"answered by {who}")],
            "calls": [],
        }
    )
    escalations = [
        e.model_copy(update={"outcome": EscalationOutcome.ACCEPTED, "confidence_after": 1.0})
        if e.rung == Rung.HUMAN
        else e
        for e in outcome.escalations
    ]
    return Outcome(
        status=LadderStatus.ESCALATED,
        answered_by=AnsweredBy.HUMAN,
        result=result,
        first=outcome.first,
        escalations=escalations,
    )

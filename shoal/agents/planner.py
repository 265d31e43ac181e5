"""The planner: task text -> a validated plan of specialist steps.

One small-model call with a JSON schema whose `specialist` field is an enum of the registered
specialists. The plan is then checked (known specialists, unique ids, inputs that exist, no
cycles, a bounded number of steps). An invalid plan is a zero-confidence result, and a valid
one carries the model's probability on its choice of specialists, so the escalation ladder
treats a doubtful plan like any other doubtful answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, create_model

from shoal.agents.memory import PlanMemory, Recall
from shoal.errors import PlanError
from shoal.models.base import Message, ModelRef, Reply
from shoal.specialists.base import Judgement, Result, Signal, Specialist
from shoal.specialists.tokens import TokenText, label_distribution

TASK = "task"  # the input name that means "the task text itself"
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class PlanStep(BaseModel):
    id: str = Field(max_length=32)
    specialist: str
    instruction: str = Field(default="", max_length=200)
    inputs: list[str] = Field(default_factory=lambda: [TASK], max_length=8)


class Plan(BaseModel):
    steps: list[PlanStep] = Field(min_length=1)

    def problems(self, registered: Sequence[str], max_steps: int = 8) -> list[str]:
        """Everything wrong with the plan, worded for a person; empty when it can run."""
        found: list[str] = []
        if len(self.steps) > max_steps:
            found.append(f"{len(self.steps)} steps, more than the limit of {max_steps}")
        ids = [s.id for s in self.steps]
        for step in self.steps:
            if not _ID.match(step.id) or step.id == TASK:
                found.append(f"step id {step.id!r} must be a short name (letters, digits, _ or -), not '{TASK}'")
            if step.specialist not in registered:
                known = ", ".join(registered)
                found.append(f"step {step.id} names unknown specialist {step.specialist!r}; known: {known}")
            for name in step.inputs:
                if name != TASK and name not in ids:
                    found.append(f"step {step.id} reads {name!r}, which is neither '{TASK}' nor a step")
            if step.id in step.inputs:
                found.append(f"step {step.id} reads its own output")
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            found.append(f"duplicate step ids: {', '.join(duplicates)}")
        if not found:
            cycle = self._cycle()
            if cycle:
                found.append(f"steps form a cycle: {' -> '.join(cycle)}")
        return found

    def check(self, registered: Sequence[str], max_steps: int = 8) -> Plan:
        problems = self.problems(registered, max_steps)
        if problems:
            raise PlanError("the plan cannot run: " + "; ".join(problems))
        return self

    def _cycle(self) -> list[str]:
        needs = {s.id: [i for i in s.inputs if i != TASK] for s in self.steps}
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(node: str) -> list[str]:
            state[node] = 1
            path.append(node)
            for nxt in needs.get(node, []):
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if state.get(nxt) is None:
                    found = visit(nxt)
                    if found:
                        return found
            state[node] = 2
            path.pop()
            return []

        for node in needs:
            if node not in state:
                found = visit(node)
                if found:
                    return found
        return []

    def ready(self, done: set[str], busy: set[str]) -> list[PlanStep]:
        """Steps whose inputs are all done and that are neither done nor under way."""
        return [
            s
            for s in self.steps
            if s.id not in done and s.id not in busy and all(i == TASK or i in done for i in s.inputs)
        ]

    def sinks(self) -> list[str]:
        """Steps no other step reads: their outputs are the run's answer."""
        read = {i for s in self.steps for i in s.inputs}
        return [s.id for s in self.steps if s.id not in read]


class TaskInput(BaseModel):
    task: str


def _memory_signal(recalled: Recall | str) -> Signal:
    if isinstance(recalled, str):
        return Signal(name="plan_memory", value=0.0, detail=recalled)
    return Signal(
        name="plan_memory",
        value=recalled.probability,
        detail=f"nearest approved task {_short(recalled.approved.task)!r} ({recalled.approved.source}), "
        f"similarity {recalled.similarity:.2f}, p(same kind)={recalled.probability:.2f} "
        f"(curve fitted on {recalled.curve.fitted_on})",
    )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


DESCRIPTIONS = {
    "classifier": "assigns a category label to text",
    "extractor": "pulls fields (ids, names, emails, amounts) out of text",
    "summarizer": "writes a short summary with key points",
    "coder": "writes Python code, checked by running it",
}


class Planner(Specialist[TaskInput, Plan]):
    name: ClassVar[str] = "planner"
    input_type = TaskInput
    output_type = Plan
    default_threshold: ClassVar[float] = 0.5

    def __init__(
        self,
        router: Any,
        model: Any,
        specialists: dict[str, str],
        *,
        max_steps: int = 6,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_tokens", 96 * max_steps)
        super().__init__(router, model, **kwargs)
        if not specialists:
            raise ValueError("a planner needs at least one specialist to plan with")
        self.specialists = specialists
        self.max_steps = max_steps
        choice: Any = Literal[tuple(specialists)]
        step = create_model(
            "Step",
            id=(str, Field(max_length=16)),
            specialist=(choice, ...),
            instruction=(str, Field(max_length=120)),
            inputs=(list[str], Field(max_length=4)),
        )
        self._response = create_model("PlanReply", steps=(list[step], Field(min_length=1, max_length=max_steps)))
        self.memory: PlanMemory | None = None

    def use_memory(self, memory: PlanMemory) -> None:
        """Reuse approved plans for tasks like theirs; prompt only for tasks unlike any."""
        self.memory = memory

    @property
    def resamplable(self) -> bool:
        return self.memory is None

    async def run(
        self,
        data: TaskInput | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[Plan]:
        """The plan approved for the nearest like task when there is one (more likely than not
        of the same kind); otherwise the prompted plan, with what the memory found as evidence.
        The frontier (`model=`) always plans from the prompt."""
        item = data if isinstance(data, TaskInput) else TaskInput.model_validate(data)
        if model is not None or self.memory is None:
            return await super().run(item, model=model, temperature=temperature, seed=seed)
        recalled = await self.memory.recall(item.task)
        if isinstance(recalled, Recall) and recalled.probability >= 0.5:
            reused = self._reuse(recalled)
            if reused is not None:
                return reused
        prompted = await super().run(item, temperature=temperature, seed=seed)
        if recalled is not None:
            prompted.evidence.append(_memory_signal(recalled))
        return prompted

    def _reuse(self, recalled: Recall) -> Result[Plan] | None:
        plan = Plan.model_validate(recalled.approved.plan)
        if plan.problems(list(self.specialists), self.max_steps):
            return None  # approved under other specialists: no longer runnable here
        return Result[Plan](
            specialist=self.name,
            model=f"{self.memory.embedder.model}+plan-memory" if self.memory else str(self.model),
            output=plan,
            confidence=recalled.probability,
            evidence=[_memory_signal(recalled)],
        )

    def response_type(self) -> type[BaseModel]:
        return self._response

    def labelled_example(self, data: TaskInput, output: Plan) -> tuple[str, str] | None:
        """An approved plan (a person's, the frontier's) is remembered with its task."""
        if output.problems(list(self.specialists), self.max_steps):
            return None
        return data.task, output.model_dump_json()

    def messages(self, data: TaskInput) -> list[Message]:
        listing = "\n".join(f"- {name}: {about}" for name, about in self.specialists.items())
        system = (
            "Plan the task as a few steps, each done by one specialist:\n"
            f"{listing}\n"
            f"Each step has an id (s1, s2, ...), a specialist, a short instruction, and inputs: "
            f"'{TASK}' for the task text and/or ids of earlier steps. Use as few steps as the task "
            f"needs (at most {self.max_steps}). Answer with JSON only."
        )
        example_task = "Ticket: 'Order 123 arrived broken, I want my money back.' Categorise it and get the order id."
        example = (
            '{"steps": [{"id": "s1", "specialist": "classifier", "instruction": "categorise the ticket", '
            '"inputs": ["task"]}, {"id": "s2", "specialist": "extractor", "instruction": "get the order id", '
            '"inputs": ["task"]}]}'
        )
        messages = [Message(role="system", content=system)]
        if {"classifier", "extractor"} <= set(self.specialists):
            messages += [
                Message(role="user", content=example_task),
                Message(role="assistant", content=example),
            ]
        messages.append(Message(role="user", content=data.task))
        return messages

    async def judge(self, data: TaskInput, reply: Reply) -> Judgement[Plan]:
        assert reply.parsed is not None
        plan = Plan.model_validate(reply.parsed.model_dump())
        problems = plan.problems(list(self.specialists), self.max_steps)
        if problems:
            return Judgement(
                output=plan,
                confidence=0.0,
                evidence=[Signal(name="valid", value=0.0, detail="; ".join(problems))],
            )
        tokens = TokenText(reply.logprobs)
        choices: list[float] = []
        if tokens:
            at = 0
            while (found := tokens.text.find('"specialist"', at)) >= 0:
                colon = tokens.text.find('"', found + len('"specialist"'))
                if colon < 0:
                    break
                dist, _ = label_distribution(tokens, colon + 1, list(self.specialists))
                value = tokens.text[colon + 1 :].split('"', 1)[0]
                choices.append(dist.get(value, 0.0))
                at = colon + 1
        confidence = min(choices) if choices else 0.0
        detail = (
            ", ".join(f"{s.id}:{s.specialist} p={p:.2f}" for s, p in zip(plan.steps, choices, strict=False))
            if choices
            else "no token probabilities from the backend"
        )
        return Judgement(
            output=plan,
            confidence=confidence,
            evidence=[
                Signal(name="valid", value=1.0, detail=f"{len(plan.steps)} steps, acyclic, inputs resolvable"),
                Signal(name="specialist_choice", value=confidence, detail=detail),
            ],
        )

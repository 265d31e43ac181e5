"""Priority by the team's rules first: many helpdesks set urgency by the kind of ticket (a
complaint is high, a newsletter question low). `[tickets.priority_by_intent]` says so, and a
ticket whose intent has a rule gets that priority, as sure as the intent is (the intent head's
calibrated probability; 1 when a person or the frontier gave it). Tickets of other intents are
classified as any field is: a trained head (`shoal train priority --data FILE`) or the prompt.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shoal.models import ModelRef
from shoal.specialists import Result, Signal
from shoal.specialists.classifier import Classification, Classifier, TextInput
from shoal.status import AnsweredBy
from shoal.tickets.reply import Upstream


class TicketInput(TextInput):
    upstream: dict[str, Upstream] = Field(default_factory=dict)


class PriorityClassifier(Classifier):
    input_type = TicketInput

    def __init__(self, *args: Any, rules: dict[str, str] | None = None, topic_step: str = "intent", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rules = dict(rules or {})
        self.topic_step = topic_step
        unknown = sorted({p for p in self.rules.values() if p not in self.labels})
        if unknown:
            raise ValueError(f"priority rules use labels that are not priorities: {', '.join(unknown)}")

    async def run(
        self,
        data: TextInput | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[Classification]:
        item = data if isinstance(data, TicketInput) else TicketInput.model_validate(data)
        topic = item.upstream.get(self.topic_step)
        label = topic.output.get("label") if topic is not None and isinstance(topic.output, dict) else None
        if model is None and topic is not None and isinstance(label, str) and label in self.rules:
            return self._by_rule(label, topic)
        return await super().run(
            TextInput(text=item.text, instruction=item.instruction), model=model, temperature=temperature, seed=seed
        )

    def _by_rule(self, intent: str, topic: Upstream) -> Result[Classification]:
        trusted = topic.answered_by in (AnsweredBy.HUMAN, AnsweredBy.FRONTIER)
        p = 1.0 if trusted else max(0.0, min(1.0, topic.confidence))
        priority = self.rules[intent]
        how = f"given by the {topic.answered_by}" if trusted else f"p={topic.confidence:.2f} (calibrated)"
        return Result[Classification](
            specialist=self.name,
            model="rules",
            output=Classification(label=priority, labels=[priority]),
            confidence=p,
            evidence=[
                Signal(
                    name="rule",
                    value=p,
                    detail=f"[tickets.priority_by_intent] {intent} = {priority}; {self.topic_step} {intent} {how}",
                )
            ],
        )

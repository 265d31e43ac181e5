"""`ReplyDrafter`: a ticket's first reply, taken from knowledge a person approved.

A reply is what a customer reads, so the small tier never writes one: it picks the knowledge
item (an approved reply, a macro, a help article; see `shoal.tickets.knowledge`) for the ticket's
topic, the one whose examples are nearest the ticket by embeddings, and fills its
`{{Placeholders}}` from the ticket's entities and the company's facts. Its confidence is the
probability that the item fits the ticket: the calibrated probability of the topic (the intent
step's answer; 1 when a person or the frontier gave it), halved for every placeholder left
unfilled. With no item for the topic, or no knowledge at all, it abstains (confidence 0, no
answer) and the ladder takes the ticket to the frontier, which writes a reply from the prompt,
or to a person. A reply a person writes or edits in review joins the knowledge (the flywheel).

Also the worked example of a custom specialist on the public `Specialist` API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from shoal.models import Message, ModelRef, ModelRouter, Reply
from shoal.specialists import Judgement, Result, Signal, Specialist
from shoal.specialists.grounding import numbers
from shoal.status import AnsweredBy
from shoal.tickets.knowledge import PLACEHOLDER, KnowledgeBase, KnowledgeItem, fill
from shoal.tickets.settings import KnowledgeSettings

if TYPE_CHECKING:
    from shoal.models.embeddings import Embedder

Reviewed = Callable[[], list[KnowledgeItem]]  # items approved in review since the last call


class Upstream(BaseModel):
    """An earlier step's answer, as the plan hands it on."""

    output: Any = None
    confidence: float = 0.0
    answered_by: str | None = None


class ReplyInput(BaseModel):
    text: str
    instruction: str = ""
    # the plan's `inputs` other than the task: the topic step (intent) and the entities
    upstream: dict[str, Upstream] = Field(default_factory=dict)


class ReplyDraft(BaseModel):
    reply: str = Field(max_length=2000, description="the first reply to send the customer")
    knowledge: list[str] = Field(default_factory=list, description="ids of the knowledge items used")
    unfilled: list[str] = Field(default_factory=list, description="placeholders left for a person to fill")


class ReplyDrafter(Specialist[ReplyInput, ReplyDraft]):
    name: ClassVar[str] = "reply"
    input_type = ReplyInput
    output_type = ReplyDraft
    default_threshold: ClassVar[float] = 0.6

    def __init__(
        self,
        router: ModelRouter,
        model: ModelRef | str,
        *,
        company: str = "our company",
        facts: dict[str, str] | None = None,
        placeholders: dict[str, str] | None = None,
        topic_step: str = "intent",
        entities_step: str = "entities",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_tokens", 300)
        super().__init__(router, model, **kwargs)
        self.company = company
        self.facts = dict(facts or {})
        # placeholder name -> entity field
        self.placeholders = dict(KnowledgeSettings().placeholders if placeholders is None else placeholders)
        self.topic_step = topic_step
        self.entities_step = entities_step
        self.knowledge: KnowledgeBase | None = None
        self.embedder: Embedder | None = None
        self._reviewed: Reviewed | None = None

    def use_knowledge(self, knowledge: KnowledgeBase, embedder: Embedder, reviewed: Reviewed | None = None) -> None:
        """Draft from `knowledge` from now on; `reviewed` brings in replies approved since."""
        self.knowledge = knowledge
        self.embedder = embedder
        self._reviewed = reviewed

    @property
    def resamplable(self) -> bool:
        return self.knowledge is None  # a retrieval answers the same every time

    # --- the small tier: knowledge -----------------------------------------------------------

    async def run(
        self,
        data: ReplyInput | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[ReplyDraft]:
        if model is not None:  # the frontier (or a named model) writes from the prompt
            return await super().run(data, model=model, temperature=temperature, seed=seed)
        item = data if isinstance(data, ReplyInput) else ReplyInput.model_validate(data)
        return await self._from_knowledge(item)

    async def _from_knowledge(self, data: ReplyInput) -> Result[ReplyDraft]:
        started = time.perf_counter()
        if self.knowledge is None or self.embedder is None or not len(self.knowledge):
            return self._abstain("no knowledge base to draft from: set [tickets.knowledge] path in shoal.toml")
        if self._reviewed is not None:
            for fresh in self._reviewed():
                self.knowledge.add(fresh)
        topic = data.upstream.get(self.topic_step)
        label = topic.output.get("label") if topic is not None and isinstance(topic.output, dict) else None
        if topic is None or not isinstance(label, str):
            return self._abstain(f"no {self.topic_step} to choose a reply by: the plan must give the reply that step")
        found = await self.knowledge.nearest(label, data.text, self.embedder)
        if found is None:
            return self._abstain(f"nothing in the knowledge base answers {self.topic_step} {label}")
        chosen, similarity = found
        filled = fill(chosen.reply, self._values(data))
        trusted = topic.answered_by in (AnsweredBy.HUMAN, AnsweredBy.FRONTIER)
        p_topic = 1.0 if trusted else max(0.0, min(1.0, topic.confidence))
        fill_share = 0.5 ** len(filled.unfilled)
        output = ReplyDraft(reply=filled.text, knowledge=[chosen.id], unfilled=filled.unfilled)
        evidence = [
            Signal(
                name="topic",
                value=p_topic,
                detail=f"{self.topic_step} {label}, "
                + ("given by the " + str(topic.answered_by) if trusted else f"p={topic.confidence:.2f} (calibrated)"),
            ),
            Signal(
                name="knowledge",
                value=max(0.0, similarity),
                detail=f"item {chosen.id} ({chosen.source or 'knowledge base'}), "
                f"nearest of {len(self.knowledge.for_topic(label))} for {label}, similarity {similarity:.2f}",
            ),
            Signal(
                name="placeholders",
                value=fill_share,
                detail=("left unfilled: " + ", ".join(filled.unfilled) if filled.unfilled else "all filled")
                + (f"; filled {', '.join(filled.filled)}" if filled.filled else ""),
            ),
        ]
        record = await self.local_call(self.embedder.model, data.text, output, time.perf_counter() - started)
        return Result[ReplyDraft](
            specialist=self.name,
            model=f"{self.embedder.model}+knowledge",
            output=output,
            confidence=p_topic * fill_share,
            evidence=evidence,
            calls=[record],
        )

    def _values(self, data: ReplyInput) -> dict[str, str]:
        values = {"Company Name": self.company, **self.facts}
        found = data.upstream.get(self.entities_step)
        entities = found.output if found is not None and isinstance(found.output, dict) else {}
        for placeholder, entity in self.placeholders.items():
            value = entities.get(entity)
            if isinstance(value, str) and value.strip():
                values[placeholder] = value.strip()
        return values

    def _abstain(self, why: str) -> Result[ReplyDraft]:
        return Result[ReplyDraft](
            specialist=self.name,
            model=str(self.model),
            output=None,
            confidence=0.0,
            evidence=[Signal(name="knowledge", value=0.0, detail=why)],
            error=why,
        )

    # --- the frontier's prompt, and what an escalated answer teaches ---------------------------

    def response_type(self) -> type[BaseModel]:
        return ReplyDraft

    def wants_logprobs(self) -> bool:
        return False

    def messages(self, data: ReplyInput) -> list[Message]:
        facts = "".join(f"\n- {name}: {value}" for name, value in self.facts.items())
        system = (
            f"You answer customer support tickets for {self.company}. Write a short, polite first reply "
            "(one to three sentences) that acknowledges the request and says what happens next. Do not "
            "promise refunds or dates, and do not invent order numbers."
            + (f" Facts you may use:{facts}" if facts else "")
            + ' Answer with JSON: {"reply": "..."}.'
        )
        return [Message(role="system", content=system), Message(role="user", content=data.text)]

    async def judge(self, data: ReplyInput, reply: Reply) -> Judgement[ReplyDraft]:
        """A prompted reply (the frontier's): no invented numbers and no template left in.
        These are checks, not a probability, so a prompted reply is trusted only as far as the
        rung that wrote it (the frontier) is."""
        draft = reply.parsed
        assert isinstance(draft, ReplyDraft)
        source_numbers = set(numbers(data.text))
        invented = [n for n in numbers(draft.reply) if n not in source_numbers]
        left = PLACEHOLDER.findall(draft.reply)
        ok = not invented and not left and bool(draft.reply.strip())
        return Judgement(
            output=draft,
            confidence=1.0 if ok else 0.0,
            evidence=[
                Signal(
                    name="no_invented_numbers",
                    value=0.0 if invented else 1.0,
                    detail=f"not in the ticket: {', '.join(invented)}" if invented else "every number is the ticket's",
                ),
                Signal(
                    name="no_placeholders",
                    value=0.0 if left else 1.0,
                    detail=f"left in: {', '.join(left[:3])}" if left else "none",
                ),
            ],
        )

    def labelled_example(self, data: ReplyInput, output: ReplyDraft) -> tuple[str, str] | None:
        """A reply given in review, kept with its ticket and topic: it becomes a knowledge item."""
        topic = data.upstream.get(self.topic_step)
        label = topic.output.get("label") if topic is not None and isinstance(topic.output, dict) else None
        if not isinstance(label, str) or not output.reply.strip() or PLACEHOLDER.search(output.reply):
            return None
        return data.text, json.dumps({"topic": label, "reply": output.reply.strip()})

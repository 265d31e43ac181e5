"""`ReplyDrafter`: drafts a ticket's first reply. A custom specialist written only on the public
`Specialist` API, so it is also the worked example of adding your own.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from shoal.models import Message, Reply
from shoal.specialists import Judgement, Signal, Specialist, TextInput
from shoal.specialists.grounding import numbers


class ReplyDraft(BaseModel):
    reply: str = Field(max_length=240, description="the first reply to send the customer")


class ReplyDrafter(Specialist[TextInput, ReplyDraft]):
    """Drafts a first reply. Confidence: the draft invents no numbers (ids, amounts, dates the
    ticket never had), leaves no template placeholders, and has a sensible length."""

    name: ClassVar[str] = "reply"
    input_type = TextInput
    output_type = ReplyDraft
    default_threshold: ClassVar[float] = 0.6

    def __init__(self, router: Any, model: Any, *, company: str = "our company", **kwargs: Any) -> None:
        kwargs.setdefault("max_tokens", 120)
        super().__init__(router, model, **kwargs)
        self.company = company

    def response_type(self) -> type[BaseModel]:
        return ReplyDraft

    def wants_logprobs(self) -> bool:
        return False

    def messages(self, data: TextInput) -> list[Message]:
        system = (
            f"You answer customer support tickets for {self.company}. Write a short, polite first reply "
            "(one to three sentences) that acknowledges the request and says what happens next. Do not "
            'promise refunds or dates, and do not invent order numbers. Answer with JSON: {"reply": "..."}.'
        )
        return [Message(role="system", content=system), Message(role="user", content=data.text)]

    async def judge(self, data: TextInput, reply: Reply) -> Judgement[ReplyDraft]:
        draft = reply.parsed
        assert isinstance(draft, ReplyDraft)
        source_numbers = set(numbers(data.text))
        invented = [n for n in numbers(draft.reply) if n not in source_numbers]
        placeholders = re.findall(r"\{\{[^}]*\}\}|\[[A-Z][A-Za-z ]+\]|<[a-z_ ]+>", draft.reply)
        words = len(draft.reply.split())
        sized = 5 <= words <= 80
        confidence = (0.0 if invented else 1.0) * (0.3 if placeholders else 1.0) * (1.0 if sized else 0.4)
        return Judgement(
            output=draft,
            confidence=confidence,
            evidence=[
                Signal(
                    name="no_invented_numbers",
                    value=0.0 if invented else 1.0,
                    detail=f"not in the ticket: {', '.join(invented)}" if invented else "every number is the ticket's",
                ),
                Signal(
                    name="no_placeholders",
                    value=0.3 if placeholders else 1.0,
                    detail=f"left in: {', '.join(placeholders[:3])}" if placeholders else "none",
                ),
                Signal(name="length", value=1.0 if sized else 0.4, detail=f"{words} words (5-80)"),
            ],
        )

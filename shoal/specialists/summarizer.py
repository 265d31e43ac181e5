"""Summarizer: a summary and key points, trusted as far as they stick to the source.

Confidence from grounding: the share of numbers, names and content words of the summary and
key points that occur in the source (whole words), and whether it states as done what the
source only asks for ("the order was refunded" for "I want a refund"). Invented numbers weigh
most (a wrong amount or date in a summary does the most harm), then names, then content
words; a summary outside the word bounds loses half its confidence.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from shoal.models.base import Message, ModelRef, Reply
from shoal.specialists.base import Judgement, Result, Signal, Specialist
from shoal.specialists.grounding import content_words, grounded, names, numbers, stem, unsupported_claims


class SummaryInput(BaseModel):
    text: str
    instruction: str = ""


class Summary(BaseModel):
    summary: str = Field(max_length=1200)
    key_points: list[str] = Field(default_factory=list, max_length=5)


class Summarizer(Specialist[SummaryInput, Summary]):
    name: ClassVar[str] = "summarizer"
    input_type = SummaryInput
    output_type = Summary
    default_threshold: ClassVar[float] = 0.6

    def __init__(
        self,
        router: Any,
        model: Any,
        *,
        min_words: int = 5,
        max_words: int = 60,
        instruction: str = "Summarise the text.",
        verbatim: bool = False,
        **kwargs: Any,
    ) -> None:
        if not 0 < min_words <= max_words:
            raise ValueError(f"need 0 < min_words <= max_words, got {min_words} and {max_words}")
        kwargs.setdefault("max_tokens", max(256, max_words * 6))  # room for the key points too
        super().__init__(router, model, **kwargs)
        self.min_words = min_words
        self.max_words = max_words
        self.instruction = instruction
        self.verbatim = verbatim  # a text no longer than a summary is its own

    async def run(
        self,
        data: SummaryInput | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[Summary]:
        """A text already within the summary's length is its own summary: copied, it cannot
        misstate the source, and no model is asked to rephrase it (most one-line tickets)."""
        item = data if isinstance(data, SummaryInput) else SummaryInput.model_validate(data)
        words = item.text.split()
        short = self.verbatim and 0 < len(words) <= self.max_words and "\n" not in item.text.strip()
        if model is not None or not short:
            return await super().run(item, model=model, temperature=temperature, seed=seed)
        return Result[Summary](
            specialist=self.name,
            model="verbatim",
            output=Summary(summary=" ".join(words)),
            confidence=1.0,
            evidence=[
                Signal(
                    name="verbatim",
                    value=1.0,
                    detail=f"the text is {len(words)} words, within the summary's {self.max_words}: "
                    "it is its own summary",
                )
            ],
        )

    def response_type(self) -> type[BaseModel]:
        return Summary

    def wants_logprobs(self) -> bool:
        return False  # grounding, not token probability, is this specialist's signal

    def messages(self, data: SummaryInput) -> list[Message]:
        asked = f" ({data.instruction})" if data.instruction else ""
        system = (
            f"{self.instruction}{asked} Write a summary of {self.min_words} to {self.max_words} words and "
            "up to 5 short key points. Use only facts from the text: no new numbers, names or "
            'claims. Answer with JSON: {"summary": "...", "key_points": ["..."]}.'
        )
        return [Message(role="system", content=system), Message(role="user", content=data.text)]

    async def judge(self, data: SummaryInput, reply: Reply) -> Judgement[Summary]:
        output = reply.parsed
        assert isinstance(output, Summary)
        written = " ".join([output.summary, *output.key_points])
        source_numbers = set(numbers(data.text))
        source_stems = {stem(w) for w in content_words(data.text)}

        nums = numbers(written)
        bad_nums = [n for n in nums if n not in source_numbers]
        people = names(written)
        bad_names = [n for n in people if not grounded(n, data.text)]
        words = content_words(written)
        bad_words = [w for w in words if stem(w) not in source_stems]

        def share(total: list[str], bad: list[str]) -> float:
            return 1 - len(bad) / len(total) if total else 1.0

        num_share, name_share, word_share = (
            share(nums, bad_nums),
            share(people, bad_names),
            share(words, bad_words),
        )
        claims = unsupported_claims(written, data.text)
        claim_share = 0.1 if claims else 1.0
        word_count = len(output.summary.split())
        in_bounds = self.min_words <= word_count <= self.max_words
        confidence = (num_share**3) * (name_share**2) * word_share * claim_share * (1.0 if in_bounds else 0.5)
        if not output.summary.strip():
            confidence = 0.0

        def listed(bad: list[str]) -> str:
            unique = list(dict.fromkeys(bad))
            return "; not in the source: " + ", ".join(unique[:8]) if unique else ""

        evidence = [
            Signal(
                name="numbers",
                value=num_share,
                detail=f"{len(nums) - len(bad_nums)}/{len(nums)} numbers grounded{listed(bad_nums)}",
            ),
            Signal(
                name="names",
                value=name_share,
                detail=f"{len(people) - len(bad_names)}/{len(people)} names grounded{listed(bad_names)}",
            ),
            Signal(
                name="content_words",
                value=word_share,
                detail=f"{len(words) - len(bad_words)}/{len(words)} words grounded{listed(bad_words)}",
            ),
            Signal(
                name="says_what_source_says",
                value=claim_share,
                detail=f"states as done what the source does not: {'; '.join(claims[:3])}"
                if claims
                else "claims nothing happened that the source does not say happened",
            ),
            Signal(
                name="length",
                value=1.0 if in_bounds else 0.5,
                detail=f"{word_count} words (bounds {self.min_words}-{self.max_words})",
            ),
        ]
        return Judgement(output=output, confidence=confidence, evidence=evidence)

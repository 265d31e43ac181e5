"""Extractor: fill a user's pydantic model from text, and check every value against the text.

Confidence multiplies three readable signals:
- required: share of required fields with a value;
- grounded: share of extracted strings and numbers found in the source (case and spacing
  ignored); a value the text never had is invention, the failure small models make most;
- token_p: mean probability of the tokens that spell the values.
`confidence = required * grounded * (0.4 + 0.6 * token_p)`; schema validity is a gate
(an invalid reply is a zero-confidence result, see `Specialist.run`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from shoal.models.base import Message, Reply
from shoal.specialists.base import Judgement, Signal, Specialist
from shoal.specialists.classifier import TextInput
from shoal.specialists.grounding import grounded
from shoal.specialists.tokens import TokenText, find_value

M = TypeVar("M", bound=BaseModel)


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every scalar in a dumped model."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


class Extractor(Specialist[TextInput, M], Generic[M]):
    name: ClassVar[str] = "extractor"
    input_type = TextInput
    default_threshold: ClassVar[float] = 0.6

    def __init__(
        self,
        router: Any,
        model: Any,
        schema: type[M],
        *,
        instruction: str = "Extract the requested fields from the text.",
        **kwargs: Any,
    ) -> None:
        super().__init__(router, model, **kwargs)
        self.output_type = schema
        self.instruction = instruction

    def response_type(self) -> type[BaseModel]:
        return self.output_type

    def messages(self, data: TextInput) -> list[Message]:
        fields = "\n".join(
            f"- {name}: {info.description or ''}".rstrip(": ")
            + ("" if info.is_required() else " (null if the text does not say)")
            for name, info in self.output_type.model_fields.items()
        )
        asked = f" ({data.instruction})" if data.instruction else ""
        system = (
            f"{self.instruction}{asked}\nFields:\n{fields}\n"
            "Copy values exactly as they appear in the text. Never invent a value: use null "
            "when the text does not contain it. Answer with JSON only."
        )
        return [Message(role="system", content=system), Message(role="user", content=data.text)]

    async def judge(self, data: TextInput, reply: Reply) -> Judgement[M]:
        output = reply.parsed
        assert isinstance(output, self.output_type)
        dumped = output.model_dump(mode="json")
        required = [name for name, info in self.output_type.model_fields.items() if info.is_required()]
        present = [name for name in required if dumped.get(name) not in (None, "", [])]
        required_share = len(present) / len(required) if required else 1.0

        checkable = [
            (path, value)
            for path, value in leaves(dumped)
            if value not in (None, "") and not isinstance(value, bool) and not self._is_enum(path)
        ]
        invented = [(p, v) for p, v in checkable if not grounded(str(v), data.text)]
        grounded_share = 1 - len(invented) / len(checkable) if checkable else 1.0

        tokens = TokenText(reply.logprobs)
        probs = [p for p in (self._value_prob(tokens, path, value) for path, value in checkable) if p is not None]
        token_p = sum(probs) / len(probs) if probs else None
        if token_p is None and tokens:
            # Nothing extracted: the signal left is how sure the model was of each `null` or `[]`.
            # Scoring only those tokens matters: keys and punctuation are forced by the grammar,
            # and the model's unconstrained probability of them says nothing about the answer.
            empty = [(name, value) for name, value in dumped.items() if value in (None, [])]
            nulls = [p for p in (self._value_prob(tokens, n, v) for n, v in empty) if p is not None]
            token_p = sum(nulls) / len(nulls) if nulls else tokens.mean_prob(0, len(tokens.text))

        confidence = required_share * grounded_share * (0.4 + 0.6 * (token_p if token_p is not None else 0.5))
        evidence = [
            Signal(
                name="required",
                value=required_share,
                detail=f"{len(present)}/{len(required)} required fields have a value"
                + (
                    f"; missing {', '.join(n for n in required if n not in present)}"
                    if len(present) < len(required)
                    else ""
                ),
            ),
            Signal(
                name="grounded",
                value=grounded_share,
                detail=(
                    f"{len(checkable) - len(invented)}/{len(checkable)} values found in the text"
                    + (
                        "; not in the text: " + ", ".join(f"{p}={json.dumps(v)}" for p, v in invented)
                        if invented
                        else ""
                    )
                )
                if checkable
                else "nothing extracted to check",
            ),
            Signal(
                name="token_p",
                value=token_p if token_p is not None else 0.5,
                detail="mean probability of the value tokens"
                if token_p is not None
                else "no token probabilities from the backend (0.5 assumed)",
            ),
        ]
        return Judgement(output=output, confidence=confidence, evidence=evidence)

    def _is_enum(self, path: str) -> bool:
        field = self.output_type.model_fields.get(path.split(".")[0].split("[")[0])
        annotation = getattr(field, "annotation", None)
        return isinstance(annotation, type) and issubclass(annotation, Enum)

    @staticmethod
    def _value_prob(tokens: TokenText, path: str, value: Any) -> float | None:
        if not tokens:
            return None
        key = path.split(".")[-1].split("[")[0]
        span = find_value(tokens.text, key)
        if span is None:
            return None
        start, end = span
        rendered = value if isinstance(value, str) else json.dumps(value)
        at = tokens.text.find(rendered, start - 1, max(end, start + len(rendered)) + 1)
        if at >= 0:
            start, end = at, at + len(rendered)
        return tokens.mean_prob(start, end)

"""Classifier: one label of a closed set (or several), with the probability behind it.

Confidence is the probability the model put on the chosen label, normalised over the label
set, read from token log-probabilities (see `tokens.label_distribution`); the full
distribution, the margin to the runner-up and the raw label mass are evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, create_model

from shoal.models.base import Message, Reply
from shoal.specialists.base import Judgement, Signal, Specialist
from shoal.specialists.tokens import TokenText, find_value, label_distribution


class TextInput(BaseModel):
    text: str
    instruction: str = Field(default="", description="what a planner asked of this step, if anything")


class Classification(BaseModel):
    label: str
    labels: list[str] = Field(default_factory=list, description="all chosen labels (multi-label)")
    distribution: dict[str, float] = Field(default_factory=dict)
    margin: float = 0.0


LabelSpec = Sequence[str] | type[Enum] | Mapping[str, str]


def normalise_labels(labels: LabelSpec) -> dict[str, str]:
    """Labels as `label -> description` (description may be empty)."""
    if isinstance(labels, type) and issubclass(labels, Enum):
        found = {str(member.value): "" for member in labels}
    elif isinstance(labels, Mapping):
        found = {str(k): str(v) for k, v in labels.items()}
    else:
        found = {str(label): "" for label in labels}
    if len(found) < 2:
        raise ValueError("a classifier needs at least two labels")
    bad = [label for label in found if not label.strip() or '"' in label or "\\" in label]
    if bad:
        raise ValueError(f"labels must be non-empty and contain no quotes or backslashes: {bad}")
    return found


class Classifier(Specialist[TextInput, Classification]):
    name: ClassVar[str] = "classifier"
    input_type = TextInput
    output_type = Classification
    default_threshold: ClassVar[float] = 0.7

    def __init__(
        self,
        router: Any,
        model: Any,
        labels: LabelSpec,
        *,
        instruction: str = "Classify the customer's message.",
        examples: Sequence[tuple[str, str]] = (),
        multi_label: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_tokens", 64 if not multi_label else 128)
        super().__init__(router, model, **kwargs)
        self.labels = normalise_labels(labels)
        self.instruction = instruction
        self.examples = list(examples)
        self.multi_label = multi_label
        unknown = [label for _, label in self.examples if label not in self.labels]
        if unknown:
            raise ValueError(f"examples use labels that are not in the label set: {sorted(set(unknown))}")
        choice: Any = Literal[tuple(self.labels)]
        if multi_label:
            self._response: type[BaseModel] = create_model(
                "Labels", labels=(list[choice], Field(min_length=1, max_length=len(self.labels)))
            )
        else:
            self._response = create_model("Label", label=(choice, ...))

    def response_type(self) -> type[BaseModel]:
        return self._response

    def messages(self, data: TextInput) -> list[Message]:
        listing = "\n".join(
            f"- {label}: {description}" if description else f"- {label}" for label, description in self.labels.items()
        )
        key = "labels" if self.multi_label else "label"
        how = "Choose every label that applies." if self.multi_label else "Choose exactly one label."
        asked = f" ({data.instruction})" if data.instruction else ""
        system = (
            f"{self.instruction}{asked} {how}\nLabels:\n{listing}\n"
            f'Answer with JSON: {{"{key}": ...}} using the labels exactly as written.'
        )
        messages = [Message(role="system", content=system)]
        for text, label in self.examples:
            messages.append(Message(role="user", content=text))
            answer = f'{{"{key}": ["{label}"]}}' if self.multi_label else f'{{"{key}": "{label}"}}'
            messages.append(Message(role="assistant", content=answer))
        messages.append(Message(role="user", content=data.text))
        return messages

    async def judge(self, data: TextInput, reply: Reply) -> Judgement[Classification]:
        assert reply.parsed is not None
        chosen: list[str] = (
            list(dict.fromkeys(reply.parsed.labels))  # type: ignore[attr-defined]
            if self.multi_label
            else [reply.parsed.label]  # type: ignore[attr-defined]
        )
        tokens = TokenText(reply.logprobs)
        if not tokens:
            return Judgement(
                output=Classification(label=chosen[0], labels=chosen),
                confidence=0.0,
                evidence=[
                    Signal(
                        name="logprobs",
                        value=0.0,
                        detail=f"{reply.ref} returned no token probabilities, so confidence is unknown",
                    )
                ],
            )
        distributions = self._distributions(tokens, chosen)
        if not distributions:
            return Judgement(
                output=Classification(label=chosen[0], labels=chosen),
                confidence=0.0,
                evidence=[Signal(name="logprobs", value=0.0, detail="could not find the label in the tokens")],
            )
        merged: dict[str, float] = {}
        for dist, _ in distributions:
            for label, p in dist.items():
                merged[label] = max(merged.get(label, 0.0), p)
        label_mass = min(mass for _, mass in distributions)
        chosen_p = {label: merged.get(label, 0.0) for label in chosen}
        ranked = sorted(merged.items(), key=lambda item: item[1], reverse=True)
        runner_up = next(((lbl, p) for lbl, p in ranked if lbl not in chosen), (None, 0.0))
        confidence = min(chosen_p.values())
        margin = max(0.0, confidence - runner_up[1])
        evidence = [
            Signal(
                name="label_probability",
                value=confidence,
                detail=", ".join(f"p({lbl})={p:.2f}" for lbl, p in chosen_p.items()),
            ),
            Signal(
                name="margin",
                value=margin,
                detail=f"runner-up {runner_up[0]} at {runner_up[1]:.2f}" if runner_up[0] else "no runner-up",
            ),
            Signal(
                name="label_mass",
                value=min(1.0, label_mass),
                detail="raw probability on any label before normalising",
            ),
        ]
        return Judgement(
            output=Classification(
                label=chosen[0],
                labels=chosen,
                distribution={lbl: round(p, 6) for lbl, p in ranked},
                margin=margin,
            ),
            confidence=confidence,
            evidence=evidence,
        )

    def _distributions(self, tokens: TokenText, chosen: list[str]) -> list[tuple[dict[str, float], float]]:
        text = tokens.text
        found: list[tuple[dict[str, float], float]] = []
        if not self.multi_label:
            span = find_value(text, "label")
            if span is not None:
                found.append(label_distribution(tokens, span[0], list(self.labels)))
            return found
        start = text.find('"labels"')
        for label in chosen:
            at = text.find(f'"{label}"', max(start, 0) + len('"labels"'))
            if at >= 0:
                found.append(label_distribution(tokens, at + 1, list(self.labels)))
        return found

    def check_answer(self, output: Classification) -> None:
        unknown = [label for label in (output.labels or [output.label]) if label not in self.labels]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not among the labels: {', '.join(self.labels)}")

    def agree(self, a: Classification, b: Classification) -> bool:
        return sorted(a.labels or [a.label]) == sorted(b.labels or [b.label])

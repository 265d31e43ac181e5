"""Classifier: one label of a closed set (or several), with the probability behind it.

Two modes. Prompted: confidence is the probability the model put on the chosen label,
normalised over the label set, read from token log-probabilities (see
`tokens.label_distribution`); the full distribution, the margin to the runner-up and the raw
label mass are evidence. Trained (`use_head`): the text is embedded and a linear head fitted on
labelled examples (see `heads`) gives a calibrated probability per label; the nearest training
examples are evidence. The frontier rung always prompts, in either mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, create_model

from shoal.errors import HeadError
from shoal.models.base import Message, ModelRef, Reply
from shoal.models.embeddings import Embedder
from shoal.specialists.base import Judgement, Result, Signal, Specialist
from shoal.specialists.heads import TrainedHead
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
        self.head: TrainedHead | None = None
        self.embedder: Embedder | None = None
        self.head_version: int | None = None

    # --- trained mode -------------------------------------------------------------------------

    def use_head(self, head: TrainedHead, embedder: Embedder) -> None:
        """Answer with `head` on `embedder`'s vectors from now on (prompting stays the frontier's way)."""
        if self.multi_label:
            raise HeadError(f"{self.name}: trained heads choose one label; this classifier is multi-label")
        unknown = [label for label in head.labels if label not in self.labels]
        if unknown:
            raise HeadError(
                f"{self.name}: the head was trained on labels this classifier does not have: "
                f"{', '.join(unknown)}; retrain it on data with the configured labels, or add them to the label set"
            )
        if str(embedder.model) != head.info.embed_model:
            raise HeadError(
                f"{self.name}: the head was trained on embeddings of {head.info.embed_model}, but this "
                f"specialist embeds with {embedder.model}; retrain with `shoal train {self.name}`, or set "
                f'[specialists.{self.name}] embed_model = "{head.info.embed_model}"'
            )
        self.head = head
        self.embedder = embedder
        self.head_version = head.info.version

    @property
    def resamplable(self) -> bool:
        return self.head is None  # a head answers the same every time

    def labelled_example(self, data: TextInput, output: Classification) -> tuple[str, str] | None:
        if self.multi_label or output.label not in self.labels:
            return None
        return data.text, output.label

    async def run(
        self,
        data: TextInput | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[Classification]:
        if self.head is None or model is not None:
            return await super().run(data, model=model, temperature=temperature, seed=seed)
        item = data if isinstance(data, TextInput) else TextInput.model_validate(data)
        return await self._run_head(item)

    async def _run_head(self, data: TextInput) -> Result[Classification]:
        import time

        assert self.head is not None and self.embedder is not None
        head, embedder = self.head, self.embedder
        started = time.perf_counter()
        vectors = await embedder.embed([data.text], remember=False)
        head.check_vectors(vectors, str(embedder.model))
        prediction = head.predict(vectors)[0]
        nearest = head.nearest(vectors[0])
        ranked = sorted(prediction.distribution.items(), key=lambda item: item[1], reverse=True)
        runner_up = ranked[1] if len(ranked) > 1 else (None, 0.0)
        margin = max(0.0, prediction.probability - runner_up[1])
        version = f"v{head.info.version}" if head.info.version is not None else "from file"
        evidence = [
            Signal(
                name="head_probability",
                value=prediction.probability,
                detail=f"p({prediction.label})={prediction.probability:.2f}, calibrated "
                f"(head {version}, {head.info.n_train + head.info.n_calibration} examples, "
                f"T={head.info.temperature:.2f})",
            ),
            margin_signal(margin, runner_up),
            Signal(
                name="nearest",
                value=max(0.0, nearest[0][2]) if nearest else 0.0,
                detail="; ".join(f"{_short(text)!r} ({label}, {sim:.2f})" for text, label, sim in nearest)
                or "no training examples kept",
            ),
        ]
        output = Classification(
            label=prediction.label,
            labels=[prediction.label],
            distribution=prediction.distribution,
            margin=margin,
        )
        ref = embedder.model
        record = await self.local_call(ref, data.text, output, time.perf_counter() - started)
        return Result[Classification](
            specialist=self.name,
            model=f"{ref}+head:{self.name}@{version}",
            output=output,
            confidence=min(1.0, max(0.0, prediction.probability)),
            evidence=evidence,
            calls=[record],
        )

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
            margin_signal(margin, runner_up),
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


def margin_signal(margin: float, runner_up: tuple[str | None, float]) -> Signal:
    label, p = runner_up
    return Signal(name="margin", value=margin, detail=f"runner-up {label} at {p:.2f}" if label else "no runner-up")


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

"""Extractor: fill a user's pydantic model from text, and check every value against the text.

Confidence multiplies three readable signals:
- required: share of required fields with a value;
- grounded: share of extracted strings and numbers found in the source (case and spacing
  ignored); a value the text never had is invention, the failure small models make most;
- token_p: mean probability of the tokens that spell the values.
`confidence = required * grounded * (0.4 + 0.6 * token_p)`; schema validity is a gate
(an invalid reply is a zero-confidence result, see `Specialist.run`).

Trained (`use_span_head`): the fields a span head knows are read off the text's tokens (see
`spans`), each value a span of the text with a calibrated confidence; the fields it has no
data for are still prompted, in one call for those fields only. The answer is as confident as
its least confident field. The frontier rung always prompts, in either mode.
"""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError, create_model
from pydantic.fields import FieldInfo

from shoal.errors import HeadError
from shoal.models.base import Message, ModelRef, Reply
from shoal.specialists.base import Judgement, Result, Signal, Specialist
from shoal.specialists.classifier import TextInput
from shoal.specialists.grounding import grounded
from shoal.specialists.spans import FieldAnswer, SpanHead, TokenReader, locate
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


def takes_text(info: FieldInfo) -> bool:
    """Whether a field holds one string (optional or not): the fields a span can answer."""
    annotation = info.annotation
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        return str in args and all(a in (str, type(None)) for a in args)
    return False


def text_fields(schema: type[BaseModel]) -> list[str]:
    return [name for name, info in schema.model_fields.items() if takes_text(info)]


class SpanReading(BaseModel):
    """What a span head read, as its recorded call says: field -> value, or None."""

    values: dict[str, str | None]


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
        self.span_head: SpanHead | None = None
        self.token_reader: TokenReader | None = None
        self.head_version: int | None = None
        self._prompted: Extractor[Any] | None = None  # the fields the span head does not know

    # --- trained mode -------------------------------------------------------------------------

    def use_span_head(self, head: SpanHead, reader: TokenReader) -> None:
        """Answer the head's fields from spans of the text from now on; the other fields stay
        prompted (and prompting stays the frontier's way)."""
        fields = self.output_type.model_fields
        unknown = [f for f in head.fields if f not in fields]
        if unknown:
            raise HeadError(
                f"{self.name}: the span head was trained on fields this extractor does not have: "
                f"{', '.join(unknown)}; retrain it on data with the configured fields, or add them to the schema"
            )
        not_text = [f for f in head.fields if not takes_text(fields[f])]
        if not_text:
            raise HeadError(f"{self.name}: a span head answers text fields only; not text: {', '.join(not_text)}")
        if str(reader.model) != head.info.embed_model:
            raise HeadError(
                f"{self.name}: the span head was trained on token vectors of {head.info.embed_model}, but this "
                f"specialist reads tokens with {reader.model}; retrain with `shoal train {self.name}`, or set "
                f'[specialists.{self.name}] embed_model = "{head.info.embed_model}"'
            )
        rest = [name for name in fields if name not in head.fields]
        self._prompted = None
        if rest:
            spec: dict[str, Any] = {name: (fields[name].annotation, fields[name]) for name in rest}
            schema: type[BaseModel] = create_model(f"{self.output_type.__name__}Rest", **spec)
            self._prompted = Extractor(
                self.router,
                self.model,
                schema,
                instruction=self.instruction,
                threshold=self.threshold,
                max_tokens=self.max_tokens,
                name=self.name,
            )
        self.span_head = head
        self.token_reader = reader
        self.head_version = head.info.version

    @property
    def resamplable(self) -> bool:
        # spans answer the same every time; only a prompted remainder can differ
        return self.span_head is None or self._prompted is not None

    def labelled_example(self, data: TextInput, output: M) -> tuple[str, str] | None:
        """(text, JSON of text field -> value or null) for an answer the frontier or a person
        gave: what a span head learns from. Values the text does not contain are left out
        (they cannot be located as spans), and so is an answer with nothing to teach."""
        dumped = output.model_dump(mode="json")
        label: dict[str, str | None] = {}
        for name in text_fields(self.output_type):
            value = dumped.get(name)
            if value is None or value == "":
                label[name] = None
            elif isinstance(value, str) and locate(data.text, value) is not None:
                label[name] = value
        if not label:
            return None
        return data.text, json.dumps(label, sort_keys=True, ensure_ascii=False)

    async def run(
        self,
        data: TextInput | dict[str, Any],
        *,
        model: ModelRef | str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Result[M]:
        if self.span_head is None or model is not None:
            return await super().run(data, model=model, temperature=temperature, seed=seed)
        item = data if isinstance(data, TextInput) else TextInput.model_validate(data)
        return await self._run_spans(item, temperature=temperature, seed=seed)

    async def _run_spans(self, data: TextInput, *, temperature: float, seed: int | None) -> Result[M]:
        assert self.span_head is not None and self.token_reader is not None
        head, reader = self.span_head, self.token_reader
        started = time.perf_counter()
        tokens = (await reader.read([data.text], remember=False))[0]
        head.check_tokens(tokens, str(reader.model))
        answers = head.read(data.text, tokens)
        latency = time.perf_counter() - started
        version = f"v{head.info.version}" if head.info.version is not None else "from file"
        values: dict[str, Any] = {field: answer.value for field, answer in answers.items()}
        evidence = [_span_signal(field, answer) for field, answer in answers.items()]
        if tokens.cut:
            evidence.append(
                Signal(
                    name="tokens_read",
                    value=tokens.offsets[-1][1] / max(1, len(data.text)) if tokens.offsets else 0.0,
                    detail="the text is longer than the model reads at once: its tail was not searched",
                )
            )
        ref = reader.model
        calls = [await self.local_call(ref, data.text, SpanReading(values=dict(values)), latency)]
        confidence = min((a.confidence for a in answers.values()), default=1.0)
        used = f"{ref}+spans:{self.name}@{version}"
        if self._prompted is not None:
            rest = await self._prompted.run(data, temperature=temperature, seed=seed)
            calls += rest.calls
            used += f"+{rest.model}"
            confidence = min(confidence, rest.confidence)
            evidence += [
                Signal(name=f"prompted_{s.name}", value=s.value, detail=f"fields without a span head: {s.detail}")
                for s in rest.evidence
            ]
            if rest.output is not None:
                values.update(rest.output.model_dump())
        try:
            output = self.output_type.model_validate(values)
        except ValidationError as exc:
            return self._failed(ref, calls, "schema", f"the spans do not make a valid answer: {exc}")
        return Result[M](
            specialist=self.name, model=used, output=output, confidence=confidence, evidence=evidence, calls=calls
        )

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


def _span_signal(field: str, answer: FieldAnswer) -> Signal:
    where = (
        f"{json.dumps(answer.value, ensure_ascii=False)} at characters {answer.start}-{answer.end}"
        if answer.value is not None
        else "not in the text"
    )
    return Signal(
        name=f"span_{field}",
        value=answer.confidence,
        detail=f"{where}; p={answer.confidence:.2f} calibrated (tagger {answer.raw:.2f})",
    )

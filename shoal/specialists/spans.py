"""A trained span head: entity values read off the text by tagging the small model's tokens.

Prompting a 135M model to copy an order number out of a ticket invents digits and forgets
fields; tagging its own per-token hidden states does not invent anything, because the answer is
a run of the text's tokens (grounded by construction). Per field, each token is tagged as the
start of the field's value, inside it, or neither (BIO), by one logistic regression over
standardised token vectors and their neighbours'. Decoding weighs every candidate span against
"the text does not say", so each field comes back with the probability of its answer; a Platt
scaling fitted on held-out *texts* makes that probability mean "this value (or its absence) is
right" (values compared after case and spacing are normalised).

Like `heads.TrainedHead`, it keeps what is needed to trust it later: its fields, the model whose
token vectors it reads, a hash of its data, its counts and metrics. Saved as one `.npz` blob;
numpy only to load and apply, scikit-learn only to fit.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from shoal.errors import HeadError, MissingExtraError
from shoal.specialists.heads import split_for_calibration

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from shoal.models.embeddings import VectorCache
    from shoal.models.router import ModelRouter

    Matrix = npt.NDArray[np.float32]

FORMAT = 1
LAYOUT = 2  # the feature layout new heads are fitted with, see `SpanHeadInfo.layout`
# a field needs this many texts that show its value before a head answers it; below, it is prompted
MIN_PER_FIELD = 5
NEIGHBOURS = 1  # tokens each side whose vectors join a token's own: a causal model's token has no right context
MAX_SPAN_TOKENS = 48  # longer candidate spans are not considered (an id or a name is far shorter)
# Platt scaling is pulled towards "as the tagger says" by this many pseudo-examples, so a small
# or all-correct calibration set cannot make every answer look certain
CALIBRATION_PRIOR = 4.0
SHAPES = 6  # lexical shape features per token, see `_shape`
CLOSERS = frozenset({",", ".", ";", ":", "!", "?", ")", "'", '"', "?!", "..."})


@dataclass(frozen=True)
class Tokens:
    """A text's tokens: (start, end) character offsets and one vector per token."""

    offsets: list[tuple[int, int]]
    vectors: Matrix
    cut: bool = False  # the text was longer than the model reads at once: its tail has no tokens


class FieldAnswer(BaseModel):
    """One field as the head reads it: a span of the text, or None when the text does not say."""

    value: str | None
    start: int | None = None
    end: int | None = None
    confidence: float
    raw: float = Field(description="the tagger's own probability, before calibration")


class SpanHeadInfo(BaseModel):
    """What a span head is, without its weights."""

    format: int = FORMAT
    kind: Literal["spans"] = "spans"
    fields: list[str]
    embed_model: str
    dim: int
    neighbours: int = NEIGHBOURS
    # features per token: 1 = vectors of it and its neighbours, and its shape; 2 = and its
    # neighbours' shapes (a head keeps the layout it was fitted with)
    layout: int = 1
    data_hash: str
    n_train: int = Field(description="texts the tagger was fitted on")
    n_calibration: int = Field(description="texts its confidences were calibrated on")
    n_tokens: int
    calibration: dict[str, tuple[float, float]] = Field(description="per field: Platt (slope, bias) on the logit")
    field_counts: dict[str, int] = Field(default_factory=dict, description="texts that show each field's value")
    version: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


def normalise(value: str | None) -> str | None:
    """How two values are compared: case and spacing do not count."""
    if value is None:
        return None
    flat = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    return flat or None


def data_hash(examples: Sequence[tuple[str, Mapping[str, tuple[int, int] | None]]]) -> str:
    digest = hashlib.sha256()
    for line in sorted(json.dumps([text, sorted(spans.items())]) for text, spans in examples):
        digest.update(line.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


# --- where a value is in a text ------------------------------------------------------------------


def locate(text: str, value: str) -> tuple[int, int] | None:
    """The characters of `text` that spell `value`: exactly, else ignoring case; a match that
    is not inside a longer word wins over one that is. None when the text does not have it."""
    value = value.strip()
    if not value:
        return None
    for flags in (0, re.IGNORECASE):
        matches = list(re.finditer(re.escape(value), text, flags))
        whole = [m for m in matches if not _inside_word(text, m.start(), m.end())]
        if whole or matches:
            found = (whole or matches)[0]
            return found.start(), found.end()
    return None


def _inside_word(text: str, start: int, end: int) -> bool:
    """Whether characters `start:end` begin or end in the middle of a word (or of a number)."""
    return (0 < start < len(text) and text[start - 1].isalnum() and text[start].isalnum()) or (
        0 < end < len(text) and text[end].isalnum() and text[end - 1].isalnum()
    )


def spans_from_label(text: str, label: str) -> dict[str, tuple[int, int] | None] | None:
    """A stored label (JSON: field -> value or null) as field -> characters of the text; None
    when a value cannot be found in the text (such an example cannot teach spans)."""
    try:
        values = json.loads(label)
    except ValueError:
        return None
    if not isinstance(values, dict):
        return None
    spans: dict[str, tuple[int, int] | None] = {}
    for field, value in values.items():
        if value is None or value == "":
            spans[str(field)] = None
            continue
        if not isinstance(value, str):
            return None
        found = locate(text, value)
        if found is None:
            return None
        spans[str(field)] = found
    return spans


# --- features and tags ---------------------------------------------------------------------------


def core(text: str, start: int, end: int) -> tuple[int, int]:
    """A token's characters without the spaces it carries (`" gold"` -> `"gold"`)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _shape(piece: str, raw: str) -> list[float]:
    """Cheap lexical shape: ids are digits, names are capitalised, and a value starts at a space."""
    return [
        float(bool(piece) and piece.isdigit()),
        float(any(c.isdigit() for c in piece)),
        float(bool(piece) and piece.isalpha()),
        float(bool(piece) and piece[0].isupper()),
        float(raw[:1].isspace()),
        float(bool(piece) and not any(c.isalnum() for c in piece)),
    ]


def token_tags(
    text: str, offsets: Sequence[tuple[int, int]], spans: Mapping[str, tuple[int, int] | None], fields: Sequence[str]
) -> list[int]:
    """Gold tag per token: 0 outside every field, 1 + 2k the first token of field k, 2 + 2k inside."""
    tags = [0] * len(offsets)
    for k, field in enumerate(fields):
        span = spans.get(field)
        if span is None:
            continue
        first = True
        for t, (start, end) in enumerate(offsets):
            a, b = core(text, start, end)
            if a < b and a < span[1] and b > span[0]:
                tags[t] = 1 + 2 * k if first else 2 + 2 * k
                first = False
    return tags


# --- the head ------------------------------------------------------------------------------------


class SpanHead:
    """Standardise -> (token, neighbours, shape) features -> softmax over BIO tags -> spans."""

    def __init__(self, info: SpanHeadInfo, *, mean: Matrix, scale: Matrix, coef: Matrix, intercept: Matrix) -> None:
        self.info = info
        self.mean = mean
        self.scale = scale
        self.coef = coef
        self.intercept = intercept

    @property
    def fields(self) -> list[str]:
        return self.info.fields

    def features(self, text: str, tokens: Tokens) -> Matrix:
        return _features(text, tokens, self.mean, self.scale, self.info.neighbours, self.info.layout)

    def tag_probabilities(self, text: str, tokens: Tokens) -> Matrix:
        import numpy as np

        if not tokens.offsets:
            return np.zeros((0, self.coef.shape[0]), dtype=np.float32)
        logits = self.features(text, tokens) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        out: Matrix = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return out

    def check_tokens(self, tokens: Tokens, embed_model: str) -> None:
        if embed_model != self.info.embed_model:
            raise HeadError(
                f"this span head was trained on token vectors of {self.info.embed_model}, not {embed_model}: "
                f"retrain it with `shoal train` on {embed_model}, or read tokens with {self.info.embed_model}"
            )
        if tokens.offsets and tokens.vectors.shape[1] != self.info.dim:
            raise HeadError(
                f"token vectors have {tokens.vectors.shape[1]} dimensions but the span head expects "
                f"{self.info.dim}; the model behind {embed_model} changed since training: retrain with `shoal train`"
            )

    def read(self, text: str, tokens: Tokens) -> dict[str, FieldAnswer]:
        """Every field of the head, answered from `text`'s tokens with a calibrated confidence."""
        probs = self.tag_probabilities(text, tokens)
        answers: dict[str, FieldAnswer] = {}
        for k, field in enumerate(self.fields):
            span, raw = decode(text, tokens.offsets, probs, k)
            slope, bias = self.info.calibration.get(field, (1.0, 0.0))
            confidence = platt(raw, slope, bias)
            if span is None and tokens.cut:
                # the tail the model never read may hold the value: absence is only as sure as the share read
                read = tokens.offsets[-1][1] / max(1, len(text)) if tokens.offsets else 0.0
                confidence *= read
            value = None if span is None else text[span[0] : span[1]]
            answers[field] = FieldAnswer(
                value=value,
                start=None if span is None else span[0],
                end=None if span is None else span[1],
                confidence=confidence,
                raw=raw,
            )
        return answers

    # --- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        examples: Sequence[tuple[str, Mapping[str, tuple[int, int] | None]]],
        tokens: Sequence[Tokens],
        *,
        fields: Sequence[str],
        embed_model: str,
        min_per_field: int = MIN_PER_FIELD,
        calibration_share: float = 0.2,
        regularisation: float = 0.5,
        seed: int = 0,
    ) -> SpanHead:
        """Fit the tagger on most texts and calibrate each field's confidence on the rest.

        `examples`: (text, field -> characters of its value, or None when the text has none);
        a field missing from an example's mapping is not known for that text.
        """
        import numpy as np

        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise MissingExtraError("training a span head", "train", "scikit-learn") from None

        if len(examples) != len(tokens):
            raise HeadError(f"{len(examples)} examples and {len(tokens)} token vectors: they must match")
        counts = Counter(f for _, spans in examples for f, span in spans.items() if span is not None and f in fields)
        kept = [f for f in fields if counts[f] >= min_per_field]
        if not kept:
            listed = ", ".join(f"{f} ({counts[f]})" for f in fields)
            raise HeadError(
                f"too few examples to train a span head: each field needs at least {min_per_field} texts that "
                f"show its value; got {listed}"
            )
        usable = [i for i, t in enumerate(tokens) if t.offsets]
        strata = [next((f for f in kept if examples[i][1].get(f) is not None), "") for i in usable]
        fit_at, cal_at = split_for_calibration(strata, share=calibration_share, seed=seed)
        fit_idx, cal_idx = [usable[i] for i in fit_at], [usable[i] for i in cal_at]

        stacked = np.concatenate([tokens[i].vectors for i in fit_idx]).astype(np.float64)
        mean = stacked.mean(axis=0)
        scale = stacked.std(axis=0)
        scale[scale < 1e-6] = 1.0
        mean32, scale32 = mean.astype(np.float32), scale.astype(np.float32)
        x = np.concatenate([_features(examples[i][0], tokens[i], mean32, scale32, NEIGHBOURS, LAYOUT) for i in fit_idx])
        y = np.concatenate(
            [np.asarray(token_tags(examples[i][0], tokens[i].offsets, examples[i][1], kept)) for i in fit_idx]
        )
        model = LogisticRegression(C=regularisation, max_iter=300, random_state=seed)
        model.fit(x, y)
        coef, intercept = _all_tags(model.classes_, model.coef_, model.intercept_, 1 + 2 * len(kept))
        info = SpanHeadInfo(
            fields=kept,
            embed_model=embed_model,
            dim=int(stacked.shape[1]),
            data_hash=data_hash(examples),
            n_train=len(fit_idx),
            n_calibration=len(cal_idx),
            n_tokens=len(y),
            layout=LAYOUT,
            calibration={},
            field_counts={f: counts[f] for f in kept},
        )
        head = cls(info, mean=mean32, scale=scale32, coef=coef, intercept=intercept)
        outcomes = head.outcomes([examples[i] for i in cal_idx], [tokens[i] for i in cal_idx], calibrated=False)
        for field in kept:
            pairs = outcomes.get(field, [])
            head.info.calibration[field] = fit_platt([p for p, _ in pairs], [ok for _, ok in pairs])
        head.info.metrics = {
            "calibration": head.field_metrics([examples[i] for i in cal_idx], [tokens[i] for i in cal_idx])
        }
        return head

    def outcomes(
        self,
        examples: Sequence[tuple[str, Mapping[str, tuple[int, int] | None]]],
        tokens: Sequence[Tokens],
        *,
        calibrated: bool = True,
    ) -> dict[str, list[tuple[float, bool]]]:
        """Per field, (confidence, right?) on labelled texts: right is the value the label gives
        (compared normalised), or no value where the label says the text has none."""
        found: dict[str, list[tuple[float, bool]]] = {f: [] for f in self.fields}
        for (text, spans), toks in zip(examples, tokens, strict=True):
            answers = self.read(text, toks)
            for field, answer in answers.items():
                if field not in spans:
                    continue
                gold = spans[field]
                right = normalise(answer.value) == normalise(None if gold is None else text[gold[0] : gold[1]])
                found[field].append((answer.confidence if calibrated else answer.raw, right))
        return found

    def field_metrics(
        self,
        examples: Sequence[tuple[str, Mapping[str, tuple[int, int] | None]]],
        tokens: Sequence[Tokens],
    ) -> dict[str, dict[str, float | int | None]]:
        """Per field on labelled texts: n, accuracy, ECE, AUROC, and the share answered with a
        value and how often those values are right."""
        out: dict[str, dict[str, float | int | None]] = {}
        answers = [self.read(text, toks) for (text, _), toks in zip(examples, tokens, strict=True)]
        for field in self.fields:
            rows: list[tuple[float, bool, bool]] = []  # (confidence, right, answered with a value)
            for (text, spans), answer in zip(examples, answers, strict=True):
                if field not in spans:
                    continue
                gold = spans[field]
                a = answer[field]
                right = normalise(a.value) == normalise(None if gold is None else text[gold[0] : gold[1]])
                rows.append((a.confidence, right, a.value is not None))
            valued = [r for r in rows if r[2]]
            out[field] = {
                "n": len(rows),
                "with_value": sum(1 for r in rows if r[2]),
                "gold_with_value": sum(1 for (t, s) in examples if s.get(field) is not None),
                "accuracy": sum(r[1] for r in rows) / len(rows) if rows else None,
                "value_accuracy": sum(r[1] for r in valued) / len(valued) if valued else None,
                "ece": ece([(c, ok) for c, ok, _ in rows]),
                "auroc": auroc_of([(c, ok) for c, ok, _ in rows]),
            }
        return out

    # --- storage --------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        import numpy as np

        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            info=np.frombuffer(self.info.model_dump_json().encode(), dtype=np.uint8),
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept=self.intercept,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, *, where: str = "the span head") -> SpanHead:
        import numpy as np

        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                raw = json.loads(data["info"].tobytes())
                if isinstance(raw, dict) and raw.get("kind") != "spans":
                    raise HeadError(
                        f"{where} is a classifier head (it has labels, not fields): an extractor needs a span "
                        f"head, made by `shoal train` for an extractor"
                    )
                info = SpanHeadInfo.model_validate(raw)
                if info.format > FORMAT or info.layout > LAYOUT:
                    raise HeadError(f"{where} was saved by a newer shoal (format {info.format}); upgrade shoal")
                return cls(info, mean=data["mean"], scale=data["scale"], coef=data["coef"], intercept=data["intercept"])
        except HeadError:
            raise
        except Exception as exc:  # a truncated file, a different format, a JSON error
            raise HeadError(f"{where} is not a readable shoal span head ({type(exc).__name__}: {exc})") from None


def _features(text: str, tokens: Tokens, mean: Matrix, scale: Matrix, neighbours: int, layout: int) -> Matrix:
    import numpy as np

    z = ((tokens.vectors - mean) / scale).astype(np.float32)
    n = z.shape[0]
    parts = [z]
    for shift in range(1, neighbours + 1):
        before = np.zeros_like(z)
        after = np.zeros_like(z)
        before[shift:] = z[: n - shift]
        after[: n - shift] = z[shift:]
        parts += [before, after]
    shapes = []
    for start, end in tokens.offsets:
        a, b = core(text, start, end)
        shapes.append(_shape(text[a:b], text[start:end]))
    shape = np.asarray(shapes, dtype=np.float32).reshape(n, SHAPES)
    parts.append(shape)
    if layout >= 2:  # the neighbours' shapes too: where digits give way to a word is where an id ends
        before, after = np.zeros_like(shape), np.zeros_like(shape)
        before[1:], after[:-1] = shape[:-1], shape[1:]
        parts += [before, after]
    out: Matrix = np.concatenate(parts, axis=1)
    return out


def _all_tags(classes: Any, coef: Any, intercept: Any, n_tags: int) -> tuple[Matrix, Matrix]:
    """scikit-learn's weights as one row per tag, in tag order, for tags it never saw too (their
    logits are pinned far below every other, so they are never chosen)."""
    import numpy as np

    coef = np.asarray(coef, dtype=np.float32)
    intercept = np.asarray(intercept, dtype=np.float32)
    if coef.shape[0] == 1:  # a binary problem is one row: make it two
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    full = np.zeros((n_tags, coef.shape[1]), dtype=np.float32)
    bias = np.full(n_tags, -30.0, dtype=np.float32)
    for row, tag in enumerate(classes):
        full[int(tag)] = coef[row]
        bias[int(tag)] = intercept[row]
    return full, bias


def decode(
    text: str, offsets: Sequence[tuple[int, int]], probs: Matrix, k: int
) -> tuple[tuple[int, int] | None, float]:
    """The most probable reading of field `k`: one span of tokens, or none; and its probability
    among all readings (every span up to MAX_SPAN_TOKENS tokens, and "the text does not say").

    A reading tags its span's first token B, the rest I, and every other token not this field,
    so its score is a sum of token log-probabilities; prefix sums make all spans O(n * width).
    """
    import numpy as np

    n = len(offsets)
    if n == 0:
        return None, 1.0
    eps = 1e-9
    b = np.clip(probs[:, 1 + 2 * k].astype(np.float64), eps, 1.0)
    i = np.clip(probs[:, 2 + 2 * k].astype(np.float64), eps, 1.0)
    outside = np.log(np.clip(1.0 - b - i, eps, 1.0))
    absent = float(outside.sum())
    cum_out = np.concatenate([[0.0], np.cumsum(outside)])
    cum_in = np.concatenate([[0.0], np.cumsum(np.log(i))])
    cores = [core(text, s, e) for s, e in offsets]
    # a span starts on a token with characters that does not continue a word, and ends on one
    # that the next character does not continue: "reb" is no value in "rebate"
    starts = np.array([a < e and not _inside_word(text, a, a) for a, e in cores])
    # nor on a lone comma or stop after an id ("order 1234, please")
    ends_ok = np.array([a < e and not _inside_word(text, e, e) and text[a:e] not in CLOSERS for a, e in cores])
    scores: list[float] = [absent]
    spans: list[tuple[int, int] | None] = [None]
    for s in np.flatnonzero(starts).tolist():
        last = min(n, s + MAX_SPAN_TOKENS)
        ends = np.arange(s, last)
        ends = ends[ends_ok[s:last]]
        if not len(ends):
            continue
        value = absent - (cum_out[ends + 1] - cum_out[s]) + math.log(b[s]) + (cum_in[ends + 1] - cum_in[s + 1])
        scores += value.tolist()
        spans += [(int(s), int(e)) for e in ends]
    array = np.asarray(scores)
    best = int(np.argmax(array))
    top = array[best]
    probability = float(1.0 / np.exp(array - top).sum())
    chosen = spans[best]
    if chosen is None:
        return None, probability
    return (cores[chosen[0]][0], cores[chosen[1]][1]), probability


# --- calibration -----------------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(1 - 1e-6, max(1e-6, p))
    return math.log(p / (1 - p))


def platt(raw: float, slope: float, bias: float) -> float:
    return 1.0 / (1.0 + math.exp(-(slope * _logit(raw) + bias)))


def fit_platt(raw: Sequence[float], right: Sequence[bool]) -> tuple[float, float]:
    """(slope, bias) of `sigmoid(slope * logit(raw) + bias)` for P(right), by Newton's method on
    the log-likelihood with a pull towards (1, 0), the tagger's own probabilities; the slope
    stays positive so a surer tagger is never a less sure answer."""
    import numpy as np

    if not raw:
        return 1.0, 0.0
    x = np.array([_logit(p) for p in raw])
    y = np.array([1.0 if r else 0.0 for r in right])
    w = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    strength = CALIBRATION_PRIOR / max(1, len(x))
    for _ in range(50):
        p = 1 / (1 + np.exp(-(w[0] * x + w[1])))
        g = np.array([((p - y) * x).mean(), (p - y).mean()]) + strength * (w - prior)
        s = p * (1 - p)
        h = np.array([[(s * x * x).mean(), (s * x).mean()], [(s * x).mean(), s.mean()]]) + strength * np.eye(2)
        step = np.linalg.solve(h, g)
        w = w - step
        w[0] = min(20.0, max(0.05, w[0]))
        if float(np.abs(step).max()) < 1e-8:
            break
    return float(w[0]), float(w[1])


def ece(pairs: Sequence[tuple[float, bool]], bins: int = 10) -> float:
    """Expected calibration error of (confidence, right) pairs, as `shoal eval` computes it."""
    if not pairs:
        return 0.0
    error = 0.0
    for k in range(bins):
        low, high = k / bins, (k + 1) / bins
        inside = [(c, r) for c, r in pairs if low <= c < high or (k == bins - 1 and c == 1.0)]
        if inside:
            error += (
                len(inside)
                / len(pairs)
                * abs(sum(r for _, r in inside) / len(inside) - sum(c for c, _ in inside) / len(inside))
            )
    return error


def auroc_of(pairs: Sequence[tuple[float, bool]]) -> float | None:
    """P(a right answer is more confident than a wrong one), ties half; None without both kinds."""
    right = [c for c, r in pairs if r]
    wrong = [c for c, r in pairs if not r]
    if not right or not wrong:
        return None
    import numpy as np

    a = np.asarray(right)[:, None]
    b = np.asarray(wrong)[None, :]
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (len(right) * len(wrong)))


# --- reading tokens through a model --------------------------------------------------------------

Progress = Callable[[int, int], None]  # (texts done, texts in all)


class TokenReader:
    """Per-token vectors of one model, through the router; like `Embedder`, texts read for
    training are kept in the store's vector cache (under `MODEL#tokens`), so a retraining reads
    each text once. `sent` counts texts that reached the model."""

    def __init__(self, router: ModelRouter, model: Any, *, cache: VectorCache | None = None) -> None:
        from shoal.models.base import ModelRef

        self.router = router
        self.model = ModelRef.parse(model)
        self.cache = cache
        self.sent = 0
        self.seconds = 0.0

    @property
    def cache_key(self) -> str:
        return f"{self.model}#tokens"

    async def read(
        self, texts: Sequence[str], *, progress: Progress | None = None, remember: bool = True
    ) -> list[Tokens]:
        """Tokens of each text, in order. `remember=False` reads the cache but adds nothing to it
        (an extractor answering tickets would otherwise keep every ticket's vectors)."""
        import asyncio

        from shoal.models.embeddings import text_key

        keys = [text_key(t) for t in texts]
        known: dict[str, Tokens] = {}
        if self.cache is not None and keys:
            stored = await asyncio.to_thread(self.cache.cached_vectors, self.cache_key, keys)
            known = {k: _unpack(v) for k, v in stored.items()}
        todo = list({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
        done = len(keys) - len(todo)
        if progress is not None:
            progress(done, len(keys))
        for key, text in todo:
            found = await self.router.token_vectors(self.model, text)
            self.sent += 1
            self.seconds += found.latency_s
            tokens = _tokens(found.offsets, found.vectors, found.cut)
            known[key] = tokens
            if self.cache is not None and remember and tokens.offsets:
                packed = _pack(tokens)
                await asyncio.to_thread(
                    self.cache.cache_vectors, self.cache_key, {key: packed}, tokens.vectors.shape[1]
                )
            done += 1
            if progress is not None:
                progress(done, len(keys))
        return [known[k] for k in keys]


def _tokens(offsets: Sequence[tuple[int, int]], vectors: Sequence[Sequence[float]], cut: bool) -> Tokens:
    import numpy as np

    matrix = (
        np.asarray(vectors, dtype=np.float32).reshape(len(offsets), -1) if offsets else np.zeros((0, 0), np.float32)
    )
    return Tokens(offsets=[(int(a), int(b)) for a, b in offsets], vectors=matrix, cut=cut)


def _pack(tokens: Tokens) -> bytes:
    """[width, cut, then per token: start, end, vector...] as little-endian float32 (offsets
    below 2**24 are exact in float32, and a ticket is far shorter)."""
    import numpy as np

    n, width = tokens.vectors.shape
    rows = np.concatenate([np.asarray(tokens.offsets, dtype=np.float32).reshape(n, 2), tokens.vectors], axis=1)
    head = np.array([width, 1.0 if tokens.cut else 0.0], dtype=np.float32)
    return np.concatenate([head, rows.reshape(-1)]).astype("<f4").tobytes()


def _unpack(blob: bytes) -> Tokens:
    import numpy as np

    flat = np.frombuffer(blob, dtype="<f4")
    width = int(flat[0])
    rows = flat[2:].reshape(-1, width + 2)
    offsets = [(int(a), int(b)) for a, b in rows[:, :2].tolist()]
    return Tokens(offsets=offsets, vectors=np.ascontiguousarray(rows[:, 2:], dtype=np.float32), cut=bool(flat[1]))

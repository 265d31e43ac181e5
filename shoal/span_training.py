"""Training span heads for extractors: from labelled spans in files, and from the answers
escalations brought back (the same loop as `shoal.training`, for `shoal train entities`).

An example is a text and a JSON label: field -> value, or null where the text has none. A file
of labelled spans (Bitext's `entity_type`, `entity_value`, `start_offset`, `end_offset`) becomes
such labels, its values cut from the text at their offsets; a frontier's or a person's answer
becomes one through `Extractor.labelled_example`. Training locates each value in its text,
holds out a stable slice of texts, reads every text's token vectors once (cached in the store),
fits and calibrates a `SpanHead`, measures it and the extractor as it answers now on the
held-out texts, and activates the new head only when it is not worse.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.errors import HeadError, LabelledDataError
from shoal.evaluation import Labelled
from shoal.specialists.classifier import TextInput
from shoal.specialists.extractor import Extractor, text_fields
from shoal.specialists.spans import (
    MIN_PER_FIELD,
    SpanHead,
    TokenReader,
    Tokens,
    auroc_of,
    ece,
    normalise,
    spans_from_label,
)
from shoal.store.db import Store
from shoal.store.tables import Head
from shoal.training import Metrics, Progress, TrainReport, examples_from_rows, is_held_out, not_worse

# entity types of labelled-span files that are a configured field under another name
ALIASES = {"refund_amount": "amount", "order_number": "order_id", "invoice_number": "invoice_id", "name": "person_name"}

Spans = Mapping[str, tuple[int, int] | None]


def span_rows(path: Path, fields: Sequence[str], *, text_column: str = "text") -> list[Labelled]:
    """Labelled-span rows of a CSV or JSONL file as (text, JSON label) examples for `fields`.

    Each row has a text (`text_column`, else `instruction`), and `entity_type` and
    `entity_value`, with `start_offset`/`end_offset` where known (then the value is the text at
    those offsets: the file's value is sometimes normalised, the text is what a span can be).
    Rows of one text are merged. Every field the file ever gives a value for is labelled on
    every text (null where that text has none); fields it never gives stay unlabelled.
    """
    rows = _read(path)
    if not rows:
        raise LabelledDataError(f"{path} holds no rows", path)
    column = text_column if text_column in rows[0] else "instruction" if "instruction" in rows[0] else None
    if column is None or "entity_type" not in rows[0]:
        raise LabelledDataError(
            f"{path} is not a file of labelled spans: it needs a text column ({text_column!r} or 'instruction') "
            f"and entity_type, entity_value (with start_offset, end_offset where known); it has {', '.join(rows[0])}",
            path,
        )
    return span_labels(rows, fields, text_column=column)


def span_labels(rows: Sequence[Mapping[str, Any]], fields: Sequence[str], *, text_column: str) -> list[Labelled]:
    """Rows of labelled spans (as `span_rows` reads them) as (text, JSON label) examples."""
    by_text: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        text = str(row.get(text_column) or "")
        if not text.strip():
            continue
        values = by_text[text]
        kind = str(row.get("entity_type") or "").strip()
        field = kind if kind in fields else ALIASES.get(kind)
        if field is None or field not in fields:
            continue  # an entity this extractor has no field for says nothing about its fields
        value = _value(text, row)
        if value:
            values[field] = value
    given = sorted({field for values in by_text.values() for field in values})
    return [
        Labelled(text=text, label=json.dumps({f: values.get(f) for f in given}, sort_keys=True, ensure_ascii=False))
        for text, values in by_text.items()
    ]


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LabelledDataError(f"cannot read {path}: {exc}", path) from None


def _value(text: str, row: Mapping[str, Any]) -> str:
    try:
        start, end = int(row.get("start_offset") or ""), int(row.get("end_offset") or "")
    except (TypeError, ValueError):
        return str(row.get("entity_value") or "").strip()
    if 0 <= start < end <= len(text):
        return text[start:end].strip()
    return str(row.get("entity_value") or "").strip()


def examples_of(
    extractor: Extractor[Any], rows: Sequence[Labelled]
) -> tuple[list[tuple[str, dict[str, tuple[int, int] | None]]], int]:
    """(text, field -> characters) for each row whose values are found in its text, and how
    many rows could not be used."""
    fields = set(text_fields(extractor.output_type))
    found: list[tuple[str, dict[str, tuple[int, int] | None]]] = []
    unusable = 0
    for row in rows:
        spans = spans_from_label(row.text, row.label)
        kept = {f: s for f, s in (spans or {}).items() if f in fields}
        if spans is None or not kept:
            unusable += 1
            continue
        found.append((row.text, kept))
    return found, unusable


def measure_spans(
    what: str,
    threshold: float,
    examples: Sequence[tuple[str, Spans]],
    answers: Sequence[Mapping[str, tuple[str | None, float]] | None],
    fields: Sequence[str],
) -> tuple[Metrics, dict[str, dict[str, Any]]]:
    """The extractor on held-out texts, per text (right when every field is; as sure as its
    least sure field, which is what the threshold sees) and per field."""
    per_text: list[tuple[float, bool]] = []
    per_field: dict[str, list[tuple[float, bool, bool, bool]]] = {f: [] for f in fields}  # conf, right, value, gold
    for (text, spans), answer in zip(examples, answers, strict=True):
        oks: list[bool] = []
        confidences: list[float] = []
        for field in fields:
            if field not in spans:
                continue
            gold = spans[field]
            gold_value = None if gold is None else text[gold[0] : gold[1]]
            value, confidence = (None, 0.0) if answer is None else answer.get(field, (None, 0.0))
            right = answer is not None and normalise(value) == normalise(gold_value)
            per_field[field].append((confidence, right, value is not None, gold is not None))
            oks.append(right)
            confidences.append(confidence)
        if oks:
            per_text.append((min(confidences), all(oks)))
    fields_out: dict[str, dict[str, Any]] = {}
    f1s: list[float] = []
    for field, rows in per_field.items():
        accepted = [r for r in rows if r[0] >= threshold]
        valued = [r for r in rows if r[2]]
        tp = sum(1 for r in valued if r[1])
        fp = len(valued) - tp
        fn = sum(1 for r in rows if r[3] and not r[1])
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
        fields_out[field] = {
            "n": len(rows),
            "gold_values": sum(1 for r in rows if r[3]),
            "values": len(valued),
            "accuracy": sum(r[1] for r in rows) / len(rows) if rows else None,
            "value_accuracy": tp / len(valued) if valued else None,
            "accepted": len(accepted) / len(rows) if rows else None,
            "accepted_accuracy": sum(r[1] for r in accepted) / len(accepted) if accepted else None,
            "ece": ece([(r[0], r[1]) for r in rows]),
            "auroc": auroc_of([(r[0], r[1]) for r in rows]),
        }
    n = len(per_text)
    taken = [p for p in per_text if p[0] >= threshold]
    metrics = Metrics(
        what=what,
        n=n,
        accuracy=sum(ok for _, ok in per_text) / n if n else 0.0,
        macro_f1=sum(f1s) / len(f1s) if f1s else 0.0,
        ece=ece(per_text),
        auroc=auroc_of(per_text),
        escalated=sum(1 for c, _ in per_text if c < threshold) / n if n else 0.0,
        accepted_accuracy=sum(ok for _, ok in taken) / len(taken) if taken else None,
        threshold=threshold,
    )
    return metrics, fields_out


async def train_span_head(
    extractor: Extractor[Any],
    key: str,
    *,
    store: Store,
    reader: TokenReader,
    files: Sequence[Labelled] = (),
    holdout: float = 0.2,
    min_per_field: int = MIN_PER_FIELD,
    baseline: int = 200,
    force: bool = False,
    progress: Progress | None = None,
) -> tuple[TrainReport, SpanHead]:
    """Train, compare and (maybe) activate a span head for the extractor stored under `key`.

    `baseline`: at most this many held-out texts are put to the prompted extractor when no
    span head is active yet (prompting is slow); 0 skips the comparison.
    """
    if not 0.0 < holdout < 1.0:
        raise HeadError(f"holdout must be between 0 and 1 (got {holdout})")
    say = progress or (lambda what, done, total: None)
    if files:
        say("keep examples", 0, len(files))
        store.add_examples(
            [{"specialist": key, "text": r.text, "label": r.label, "source": "file"} for r in files if r.text.strip()]
        )
        say("keep examples", len(files), len(files))
    stored = examples_from_rows(store.examples(key))
    examples, unusable = examples_of(extractor, [Labelled(text=r.text, label=r.label) for r in stored])
    if not examples:
        raise HeadError(
            f"no labelled spans for {key}: give a file with `shoal train {key} --data FILE` (text, entity_type, "
            f"entity_value, start_offset, end_offset), or let escalated answers accumulate first"
            + (f"; {unusable} stored examples have values not found in their text" if unusable else "")
        )
    train = [e for e in examples if not is_held_out(e[0], holdout)]
    held = [e for e in examples if is_held_out(e[0], holdout)]
    texts = [t for t, _ in train] + [t for t, _ in held]
    sent_before, seconds_before = reader.sent, reader.seconds
    say("read tokens", 0, len(texts))
    tokens = await reader.read(texts, progress=lambda done, total: say("read tokens", done, total))
    train_t, held_t = tokens[: len(train)], tokens[len(train) :]
    say("fit", 0, 1)
    head = SpanHead.fit(
        train,
        train_t,
        fields=text_fields(extractor.output_type),
        embed_model=str(reader.model),
        min_per_field=min_per_field,
    )
    say("fit", 1, 1)
    say("evaluate", 0, len(held))
    read = [head.read(text, toks) for (text, _), toks in zip(held, held_t, strict=True)]
    answers = [{f: (a.value, a.confidence) for f, a in r.items()} for r in read]
    after, fields_after = measure_spans("new head", extractor.threshold, held, answers, head.fields)
    say("evaluate", len(held), len(held))
    before, fields_before = (
        await _current(extractor, held, held_t, head.fields, baseline=baseline, progress=progress)
        if held
        else (None, {})
    )
    ok, reason = not_worse(after, before)
    if not held:
        ok, reason = False, "no held-out texts to measure the new head on; add examples or use --force"
    activate = ok or force
    if force and not ok:
        reason = f"activated by --force although {reason}"
    metrics = {
        "after": after.model_dump(),
        "before": None if before is None else before.model_dump(),
        "fields": fields_after,
        "fields_before": fields_before,
        "calibration": head.info.metrics.get("calibration"),
    }
    head.info.metrics = metrics
    row = store.add_head(
        Head(
            specialist=key,
            version=0,
            embed_model=head.info.embed_model,
            labels_json=json.dumps(head.fields),
            n_examples=len(train),
            data_hash=head.info.data_hash,
            metrics_json=json.dumps(metrics),
            blob=head.to_bytes(),
        ),
        activate=activate,
    )
    head.info.version = row.version
    sent = reader.sent - sent_before
    seconds = reader.seconds - seconds_before
    slopes = [slope for slope, _ in head.info.calibration.values()]
    report = TrainReport(
        specialist=key,
        embed_model=head.info.embed_model,
        examples=len(stored),
        by_source=dict(Counter(r.source for r in stored)),
        labels=len(head.fields),
        labels_without_examples=[f for f in text_fields(extractor.output_type) if f not in head.fields],
        n_train=len(train),
        n_holdout=len(held),
        embedded=sent,
        reused=len(set(texts)) - sent,
        texts_per_second=sent / seconds if sent and seconds > 0 else None,
        before=before,
        after=after,
        activated=activate,
        reason=reason,
        version=row.version,
        # one number for the report: the temperature equivalent of the mean Platt slope
        temperature=len(slopes) / sum(slopes) if slopes else 1.0,
        fields=fields_after,
    )
    return report, head


async def _current(
    extractor: Extractor[Any],
    held: Sequence[tuple[str, Spans]],
    tokens: Sequence[Tokens],
    fields: Sequence[str],
    *,
    baseline: int,
    progress: Progress | None,
) -> tuple[Metrics | None, dict[str, dict[str, Any]]]:
    """The extractor as it answers now, on the new head's fields: its active span head, or its
    prompt on a sample of the held-out texts."""
    current = extractor.span_head
    dims = {t.vectors.shape[1] for t in tokens if t.offsets}
    if (
        current is not None
        and current.info.embed_model == str(extractor.token_reader.model if extractor.token_reader else "")
        and dims <= {current.info.dim}  # else trained on another model: compare with prompting
    ):
        read = [current.read(text, toks) for (text, _), toks in zip(held, tokens, strict=True)]
        answers = [{f: (a.value, a.confidence) for f, a in r.items() if f in fields} for r in read]
        return measure_spans(f"head v{current.info.version}", extractor.threshold, held, answers, fields)
    if baseline <= 0:
        return None, {}
    step = max(1, len(held) // baseline)
    sample = list(held)[::step][:baseline]
    prompted: list[Mapping[str, tuple[str | None, float]] | None] = []
    started = time.perf_counter()
    for i, (text, _) in enumerate(sample):
        result = await Extractor.run(extractor, TextInput(text=text), model=extractor.model)
        dumped = None if result.output is None else result.output.model_dump(mode="json")
        prompted.append(
            None if dumped is None else {f: (_text_or_none(dumped.get(f)), result.confidence) for f in fields}
        )
        if progress is not None:
            progress("prompt baseline", i + 1, len(sample))
    metrics, per_field = measure_spans("prompt", extractor.threshold, sample, prompted, fields)
    metrics.seconds_per_item = (time.perf_counter() - started) / len(sample) if sample else 0.0
    return metrics, per_field


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def load_span_head(row: Head) -> SpanHead:
    head = SpanHead.from_bytes(row.blob, where=f"head v{row.version} of {row.specialist}")
    head.info.version = row.version
    return head

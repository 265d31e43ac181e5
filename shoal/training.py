"""Training classifier heads: from files and from the answers escalations brought back.

`train_head` is the whole loop behind `shoal train`: gather labelled examples (files are kept in
the store next to the frontier's and people's answers), hold out a stable slice, embed
everything once (the store caches vectors by model and text hash), fit and calibrate a head,
measure it and the specialist as it answers now on the same held-out slice, and activate the
new head only when it is not worse.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from shoal.errors import HeadError
from shoal.evaluation import Labelled, Prediction, auroc, expected_calibration_error, macro_f1
from shoal.models.embeddings import Embedder
from shoal.specialists.classifier import Classifier, TextInput
from shoal.specialists.heads import MIN_PER_LABEL, TrainedHead
from shoal.store.db import Store
from shoal.store.tables import Example, Head

# a person's answer beats the frontier's, which beats a file's, for the same text
SOURCE_RANK = {"human": 3, "frontier": 2, "file": 1}
HOLDOUT_BUCKETS = 100

# (phase, done, total): "keep examples", "embed", "fit", "evaluate", "prompt baseline" in turn, so
# a face can show where a long training is (embedding 10,000 texts takes minutes on a CPU)
Progress = Callable[[str, int, int], None]


class Metrics(BaseModel):
    """One classifier on the held-out slice."""

    what: str
    n: int
    accuracy: float
    macro_f1: float
    ece: float
    auroc: float | None
    escalated: float = Field(description="share below the specialist's threshold")
    accepted_accuracy: float | None = Field(default=None, description="accuracy of the answers at or above it")
    threshold: float
    seconds_per_item: float = 0.0


class TrainReport(BaseModel):
    specialist: str
    embed_model: str
    examples: int
    by_source: dict[str, int]
    labels: int
    labels_without_examples: list[str]
    n_train: int
    n_holdout: int
    embedded: int = Field(description="texts sent to the model to embed (the rest came from the cache)")
    reused: int
    texts_per_second: float | None
    before: Metrics | None
    after: Metrics
    activated: bool
    reason: str
    version: int
    temperature: float
    fields: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="span heads: held-out metrics per field (labels are fields)"
    )


def examples_from_rows(rows: Sequence[Example]) -> list[Example]:
    """One example per text: the most trusted source, and the latest of that source."""
    best: dict[str, Example] = {}
    for row in rows:
        kept = best.get(row.text_hash)
        rank = (SOURCE_RANK.get(row.source, 0), row.created_at)
        if kept is None or rank >= (SOURCE_RANK.get(kept.source, 0), kept.created_at):
            best[row.text_hash] = row
    return sorted(best.values(), key=lambda r: r.id or 0)


def is_held_out(text: str, share: float) -> bool:
    """Stable across retrainings: a text is held out or not by its hash alone, so a head
    trained today is never measured on texts it was fitted on yesterday."""
    bucket = int(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % HOLDOUT_BUCKETS
    return bucket < round(share * HOLDOUT_BUCKETS)


def split(examples: Sequence[Example], *, share: float, min_per_label: int) -> tuple[list[Example], list[Example]]:
    """(train, held out); a label too small to lose examples keeps them all for training."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for row in examples:
        by_label[row.label].append(row)
    train: list[Example] = []
    held: list[Example] = []
    for rows in by_label.values():
        out = [r for r in rows if is_held_out(r.text, share)]
        if len(rows) - len(out) < min_per_label:
            train += rows
        else:
            held += out
            train += [r for r in rows if not is_held_out(r.text, share)]
    return train, held


def check_labels(classifier: Classifier, rows: Sequence[Labelled], where: str) -> None:
    unknown = Counter(r.label for r in rows if r.label not in classifier.labels)
    if unknown:
        listed = ", ".join(f"{label} ({n})" for label, n in unknown.most_common(10))
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise HeadError(
            f"{where} has labels the {classifier.name} classifier does not know: {listed}{more}. "
            f"Add them to its label set in shoal.toml, or leave those rows out"
        )


def measure(
    what: str, classifier: Classifier, gold: Sequence[Labelled], predicted: Sequence[tuple[str | None, float]]
) -> Metrics:
    predictions = [
        Prediction(text=row.text, gold=row.label, predicted=label, confidence=p, seconds=0.0)
        for row, (label, p) in zip(gold, predicted, strict=True)
    ]
    n = len(predictions)
    accepted = [p for p in predictions if p.confidence >= classifier.threshold]
    return Metrics(
        what=what,
        n=n,
        accepted_accuracy=sum(p.correct for p in accepted) / len(accepted) if accepted else None,
        accuracy=sum(p.correct for p in predictions) / n if n else 0.0,
        macro_f1=macro_f1(predictions, sorted({r.label for r in gold})),
        ece=expected_calibration_error(predictions),
        auroc=auroc(predictions),
        escalated=sum(p.confidence < classifier.threshold for p in predictions) / n if n else 0.0,
        threshold=classifier.threshold,
    )


def not_worse(after: Metrics, before: Metrics | None) -> tuple[bool, str]:
    """The rule for activating a new head: at least as accurate on the same held-out slice, and
    the answers it would accept at the threshold (its confidence decides what is escalated) are
    not less often right. Calibration error alone does not gate: a classifier that is almost
    never right and says so has a small ECE and is still useless."""
    if before is None:
        return True, "no current classifier to compare with"
    if after.accuracy + 1e-9 < before.accuracy:
        return False, f"accuracy {after.accuracy:.3f} is below the current {before.accuracy:.3f}"
    new, old = after.accepted_accuracy, before.accepted_accuracy
    if new is not None and old is not None and new + 0.02 < old:
        return False, (
            f"the answers it would accept at {after.threshold:.2f} are right {new:.1%} of the time, "
            f"against {old:.1%} for the current one"
        )
    return True, f"accuracy {after.accuracy:.3f} >= {before.accuracy:.3f}, ECE {after.ece:.3f} vs {before.ece:.3f}"


async def train_head(
    classifier: Classifier,
    key: str,
    *,
    store: Store,
    embedder: Embedder,
    files: Sequence[Labelled] = (),
    holdout: float = 0.2,
    min_per_label: int = MIN_PER_LABEL,
    baseline: int = 200,
    force: bool = False,
    progress: Progress | None = None,
) -> tuple[TrainReport, TrainedHead]:
    """Train, compare and (maybe) activate a head for the classifier stored under `key`.

    `baseline`: at most this many held-out items are put to the prompted classifier when no
    head is active yet (prompting is slow); 0 skips the comparison.
    """
    if not 0.0 < holdout < 1.0:
        raise HeadError(f"holdout must be between 0 and 1 (got {holdout})")
    say = progress or (lambda what, done, total: None)
    if files:
        check_labels(classifier, files, "the training data")
        say("keep examples", 0, len(files))
        store.add_examples(
            [{"specialist": key, "text": r.text, "label": r.label, "source": "file"} for r in files if r.text.strip()]
        )
        say("keep examples", len(files), len(files))
    stored = examples_from_rows(store.examples(key))
    if not stored:
        raise HeadError(
            f"no labelled examples for {key}: give a file with `shoal train {key} --data FILE`, "
            f"or let escalated answers accumulate first"
        )
    check_labels(classifier, [Labelled(text=r.text, label=r.label) for r in stored], "the stored examples")
    train, held = split(stored, share=holdout, min_per_label=min_per_label)

    texts = [r.text for r in train] + [r.text for r in held]
    sent_before, seconds_before = embedder.sent, embedder.seconds
    say("embed", 0, len(texts))  # before the cache lookup, which takes a while on its own
    vectors = await embedder.embed(texts, progress=lambda done, total: say("embed", done, total))
    train_x, held_x = vectors[: len(train)], vectors[len(train) :]
    say("fit", 0, 1)
    head = TrainedHead.fit(
        train_x,
        [r.label for r in train],
        [r.text for r in train],
        embed_model=str(embedder.model),
        min_per_label=min_per_label,
    )

    say("fit", 1, 1)
    gold = [Labelled(text=r.text, label=r.label) for r in held]
    say("evaluate", 0, len(held))
    if held:
        after = measure("new head", classifier, gold, [(p.label, p.probability) for p in head.predict(held_x)])
    else:
        after = Metrics(
            what="new head",
            n=0,
            accuracy=0.0,
            macro_f1=0.0,
            ece=0.0,
            auroc=None,
            escalated=0.0,
            threshold=classifier.threshold,
        )
    say("evaluate", len(held), len(held))
    before = await _current(classifier, gold, held_x, baseline=baseline, progress=progress) if held else None

    ok, reason = not_worse(after, before)
    if not held:
        ok, reason = False, "no held-out examples to measure the new head on; add examples or use --force"
    activate = ok or force
    if force and not ok:
        reason = f"activated by --force although {reason}"
    counts = Counter(r.source for r in stored)
    metrics = {"after": after.model_dump(), "before": None if before is None else before.model_dump()}
    head.info.metrics = metrics
    row = store.add_head(
        Head(
            specialist=key,
            version=0,
            embed_model=head.info.embed_model,
            labels_json=json.dumps(head.labels),
            n_examples=len(train),
            data_hash=head.info.data_hash,
            metrics_json=json.dumps(metrics),
            blob=head.to_bytes(),  # the version is the row's, set again on load
        ),
        activate=activate,
    )
    head.info.version = row.version
    sent = embedder.sent - sent_before
    seconds = embedder.seconds - seconds_before
    report = TrainReport(
        specialist=key,
        embed_model=head.info.embed_model,
        examples=len(stored),
        by_source=dict(counts),
        labels=len(head.labels),
        labels_without_examples=[label for label in classifier.labels if label not in head.labels],
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
        temperature=head.info.temperature,
    )
    return report, head


async def _current(
    classifier: Classifier,
    gold: Sequence[Labelled],
    vectors: Any,
    *,
    baseline: int,
    progress: Progress | None,
) -> Metrics | None:
    """The classifier as it answers now: its active head, or its prompt on a sample."""
    if classifier.head is not None and classifier.embedder is not None:
        try:
            classifier.head.check_vectors(vectors, str(classifier.embedder.model))
        except HeadError:
            pass  # trained on another embedding model: compare with prompting instead
        else:
            found = classifier.head.predict(vectors)
            version = classifier.head.info.version
            return measure(f"head v{version}", classifier, gold, [(p.label, p.probability) for p in found])
    if baseline <= 0:
        return None
    # spread over the slice, which is grouped by label
    step = max(1, len(gold) // baseline)
    sample = list(gold)[::step][:baseline]
    predicted: list[tuple[str | None, float]] = []
    started = time.perf_counter()
    for i, row in enumerate(sample):
        result = await Classifier.run(classifier, TextInput(text=row.text), model=classifier.model)
        predicted.append((result.output.label if result.output else None, result.confidence))
        if progress is not None:
            progress("prompt baseline", i + 1, len(sample))
    metrics = measure("prompt", classifier, sample, predicted)
    metrics.seconds_per_item = (time.perf_counter() - started) / len(sample) if sample else 0.0
    return metrics


def load_head(row: Head) -> TrainedHead:
    head = TrainedHead.from_bytes(row.blob, where=f"head v{row.version} of {row.specialist}")
    head.info.version = row.version
    return head

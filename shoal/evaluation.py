"""`shoal eval`: how good a classifier is, how honest its confidence, and where to set its
threshold.

Reports accuracy, macro-F1, expected calibration error (ECE), the AUROC of confidence for
correctness, and a table of share escalated and system accuracy per threshold, ending with the
threshold that reaches a target accuracy with the fewest escalations (the frontier assumed
right, or right at a given rate). Rows whose gold label is outside the label set (CLINC150's
out-of-scope) can never be answered correctly by the classifier; they should come back with
low confidence and be escalated.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

OUT_OF_SCOPE = "oos"


class Labelled(BaseModel):
    text: str
    label: str


class Prediction(BaseModel):
    text: str
    gold: str
    predicted: str | None
    confidence: float
    seconds: float
    error: str | None = None

    @property
    def correct(self) -> bool:
        return self.predicted == self.gold


def load_labelled(
    path: Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    split: str = "test",
    with_out_of_scope: bool = True,
) -> list[Labelled]:
    """CSV, JSONL, or the CLINC150 JSON (`{"train": [[text, intent], ...], "oos_test": ...}`)."""
    if not path.is_file():
        raise FileNotFoundError(f"no labelled data at {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {text_column, label_column} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(
                    f"{path} has no column(s) {sorted(missing)}; its columns are {reader.fieldnames}. "
                    "Choose them with --text and --label"
                )
            return [Labelled(text=r[text_column], label=r[label_column]) for r in reader]
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if text_column not in record or label_column not in record:
                    raise ValueError(f"{path} line {number} lacks '{text_column}' or '{label_column}'")
                rows.append(Labelled(text=record[text_column], label=record[label_column]))
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or split not in data:
            splits = sorted(data) if isinstance(data, dict) else []
            raise ValueError(f"{path} has no split '{split}'; it has {splits}")
        rows = [Labelled(text=t, label=lbl) for t, lbl in data[split]]
        if with_out_of_scope and f"oos_{split}" in data:
            rows += [Labelled(text=t, label=OUT_OF_SCOPE) for t, _ in data[f"oos_{split}"]]
        return rows
    raise ValueError(f"{path}: use a .csv, .jsonl or CLINC150-style .json file")


def stratified(rows: Sequence[Labelled], per_label: int, *, seed: int = 0) -> list[Labelled]:
    """Up to `per_label` rows of each label, in a fixed shuffled order."""
    by_label: dict[str, list[Labelled]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    rng = random.Random(seed)
    chosen: list[Labelled] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        chosen += group[:per_label]
    rng.shuffle(chosen)
    return chosen


class ThresholdRow(BaseModel):
    threshold: float
    escalated: float = Field(description="share of items below the threshold")
    accepted_accuracy: float | None
    system_accuracy: float = Field(description="with escalated items answered by the frontier")
    out_of_scope_escalated: float | None = None


class Report(BaseModel):
    n: int
    n_in_scope: int
    n_out_of_scope: int
    accuracy: float
    in_scope_accuracy: float
    macro_f1: float
    ece: float
    auroc: float | None
    mean_confidence_in_scope: float
    mean_confidence_out_of_scope: float | None
    seconds_per_item: float
    errors: int
    table: list[ThresholdRow]
    target_accuracy: float
    frontier_accuracy: float
    recommended: ThresholdRow | None


def macro_f1(predictions: Sequence[Prediction], labels: Sequence[str]) -> float:
    scores = []
    for label in labels:
        tp = sum(p.predicted == label and p.gold == label for p in predictions)
        fp = sum(p.predicted == label and p.gold != label for p in predictions)
        fn = sum(p.predicted != label and p.gold == label for p in predictions)
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def expected_calibration_error(predictions: Sequence[Prediction], bins: int = 10) -> float:
    total = len(predictions)
    if not total:
        return 0.0
    error = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [p for p in predictions if low <= p.confidence < high or (b == bins - 1 and p.confidence == 1.0)]
        if inside:
            accuracy = sum(p.correct for p in inside) / len(inside)
            confidence = sum(p.confidence for p in inside) / len(inside)
            error += len(inside) / total * abs(accuracy - confidence)
    return error


def auroc(predictions: Sequence[Prediction]) -> float | None:
    """Probability that a correct answer has higher confidence than a wrong one (ties: half)."""
    right = sorted(p.confidence for p in predictions if p.correct)
    wrong = sorted(p.confidence for p in predictions if not p.correct)
    if not right or not wrong:
        return None
    # rank-sum (Mann-Whitney U) in O(n log n)
    ranked = sorted([(c, 1) for c in right] + [(c, 0) for c in wrong])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2
        rank_sum += average_rank * sum(flag for _, flag in ranked[i:j])
        i = j
    u = rank_sum - len(right) * (len(right) + 1) / 2
    return u / (len(right) * len(wrong))


def threshold_table(
    predictions: Sequence[Prediction], *, frontier_accuracy: float = 1.0, steps: int = 20
) -> list[ThresholdRow]:
    n = len(predictions)
    oos = [p for p in predictions if p.gold == OUT_OF_SCOPE]
    grid = {round(step / steps, 4) for step in range(steps + 1)}
    # small models are often unsure of everything: deciles of the observed confidences add
    # thresholds where the items actually are
    ordered = sorted(p.confidence for p in predictions)
    if ordered:
        grid |= {round(ordered[min(len(ordered) - 1, len(ordered) * k // 10)], 4) for k in range(1, 10)}
    rows = []
    for t in sorted(grid):
        accepted = [p for p in predictions if p.confidence >= t and p.predicted is not None]
        escalated = n - len(accepted)
        correct = sum(p.correct for p in accepted)
        rows.append(
            ThresholdRow(
                threshold=t,
                escalated=escalated / n if n else 0.0,
                accepted_accuracy=correct / len(accepted) if accepted else None,
                system_accuracy=(correct + frontier_accuracy * escalated) / n if n else 0.0,
                out_of_scope_escalated=(
                    sum(p.confidence < t or p.predicted is None for p in oos) / len(oos) if oos else None
                ),
            )
        )
    return rows


def report(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    *,
    target_accuracy: float = 0.9,
    frontier_accuracy: float = 1.0,
) -> Report:
    in_scope = [p for p in predictions if p.gold != OUT_OF_SCOPE]
    oos = [p for p in predictions if p.gold == OUT_OF_SCOPE]
    table = threshold_table(predictions, frontier_accuracy=frontier_accuracy)
    reaching = [row for row in table if row.system_accuracy >= target_accuracy]
    recommended = min(reaching, key=lambda row: (row.escalated, row.threshold)) if reaching else None
    n = len(predictions)
    return Report(
        n=n,
        n_in_scope=len(in_scope),
        n_out_of_scope=len(oos),
        accuracy=sum(p.correct for p in predictions) / n if n else 0.0,
        in_scope_accuracy=sum(p.correct for p in in_scope) / len(in_scope) if in_scope else 0.0,
        macro_f1=macro_f1(in_scope, labels),
        ece=expected_calibration_error(predictions),
        auroc=auroc(predictions),
        mean_confidence_in_scope=sum(p.confidence for p in in_scope) / len(in_scope) if in_scope else 0.0,
        mean_confidence_out_of_scope=sum(p.confidence for p in oos) / len(oos) if oos else None,
        seconds_per_item=sum(p.seconds for p in predictions) / n if n else 0.0,
        errors=sum(p.error is not None for p in predictions),
        table=table,
        target_accuracy=target_accuracy,
        frontier_accuracy=frontier_accuracy,
        recommended=recommended,
    )

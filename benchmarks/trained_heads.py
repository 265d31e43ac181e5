"""Trained classifier heads against prompting, on CLINC150 and on the Bitext intent taxonomy.

For each data set: fit a head on the training split (embeddings of the small model, cached in
--db so a second run embeds nothing), and on the test split print accuracy, macro-F1, ECE, AUROC,
the out-of-scope share escalated at the threshold that keeps in-scope escalation at or under
20%, and embedding throughput; then the same for the prompted classifier on a sample.

- CLINC150: `train` (15,000 rows, 150 intents) -> `test` (4,500) + `oos_test` (1,000).
- Bitext: the 27 intents of the 4,514 rows, 80/20 by a stable hash of the text; CLINC150's
  `oos_test` rows serve as out-of-scope queries (a support classifier meets them too).

Run by hand: `uv run python benchmarks/trained_heads.py [--data clinc bitext] [--db heads.db]`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoal.backends import build_router
from shoal.config import Settings
from shoal.evaluation import (
    OUT_OF_SCOPE,
    Labelled,
    Prediction,
    expected_calibration_error,
    load_labelled,
    report,
    stratified,
)
from shoal.models.embeddings import Embedder
from shoal.specialists.classifier import Classifier, TextInput
from shoal.specialists.heads import TrainedHead
from shoal.store import Store

DATA = Path(__file__).resolve().parents[1] / "data"
console = Console()


def clinc() -> tuple[list[Labelled], list[Labelled]]:
    path = DATA / "clinc150.json"
    return load_labelled(path, split="train", with_out_of_scope=False), load_labelled(path, split="test")


def bitext() -> tuple[list[Labelled], list[Labelled]]:
    with (DATA / "bitext_customer_support.csv").open(encoding="utf-8", newline="") as handle:
        rows = [Labelled(text=r["instruction"], label=r["intent"]) for r in csv.DictReader(handle)]

    def held(text: str) -> bool:
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 5 == 0

    oos = [r for r in load_labelled(DATA / "clinc150.json", split="test") if r.label == OUT_OF_SCOPE]
    return [r for r in rows if not held(r.text)], [r for r in rows if held(r.text)] + oos


def at_in_scope_budget(predictions: list[Prediction], budget: float = 0.20) -> tuple[float, float, float]:
    """(threshold, in-scope escalated, out-of-scope escalated) at the highest threshold that
    escalates at most `budget` of in-scope items."""
    inside = sorted(p.confidence for p in predictions if p.gold != OUT_OF_SCOPE)
    oos = [p for p in predictions if p.gold == OUT_OF_SCOPE]
    threshold = inside[int(len(inside) * budget)] if inside else 0.0
    in_escalated = sum(c < threshold for c in inside) / len(inside)
    oos_escalated = sum(p.confidence < threshold for p in oos) / len(oos) if oos else 0.0
    return threshold, in_escalated, oos_escalated


async def run(name: str, train: list[Labelled], test: list[Labelled], model: str, db: Path, prompt_n: int) -> None:
    settings = Settings.load(env={})
    router = build_router(settings)
    store = Store(db)
    labels = sorted({r.label for r in train})
    embedder = Embedder(router, model, cache=store, batch_size=64)
    started = time.perf_counter()
    with console.status(f"{name}: embedding {len(train):,} training texts") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"{name}: embedding {done:,}/{total:,} training texts")

        train_x = await embedder.embed([r.text for r in train], progress=progress)
        fit_started = time.perf_counter()
        head = TrainedHead.fit(train_x, [r.label for r in train], [r.text for r in train], embed_model=model)
        fit_s = time.perf_counter() - fit_started
        status.update(f"{name}: embedding {len(test):,} test texts")
        test_x = await embedder.embed([r.text for r in test])
    predicted = head.predict(test_x)
    head_predictions = [
        Prediction(text=r.text, gold=r.label, predicted=p.label, confidence=p.probability, seconds=0.0)
        for r, p in zip(test, predicted, strict=True)
    ]
    rate = embedder.sent / embedder.seconds if embedder.seconds else None

    classifier = Classifier(router, model, labels, instruction="Classify the user's request by intent.")
    inside = [r for r in test if r.label != OUT_OF_SCOPE]
    outside = [r for r in test if r.label == OUT_OF_SCOPE]
    sample = (
        stratified(inside, max(1, prompt_n * 4 // 5 // len(labels))) + stratified(outside, prompt_n // 5)
        if prompt_n
        else []
    )
    prompt_predictions = []
    with console.status(f"{name}: prompting {len(sample)} test rows") as status:
        for i, row in enumerate(sample):
            began = time.perf_counter()
            result = await classifier.run(TextInput(text=row.text))
            prompt_predictions.append(
                Prediction(
                    text=row.text,
                    gold=row.label,
                    predicted=result.output.label if result.output else None,
                    confidence=result.confidence,
                    seconds=time.perf_counter() - began,
                )
            )
            status.update(f"{name}: prompting {i + 1}/{len(sample)} test rows")
    await router.aclose()

    table = Table(title=f"{name}: {len(labels)} labels, {len(train):,} training rows, {model}")
    columns = ("", "rows", "acc.", "macro-F1", "ECE", "ECE in scope", "AUROC", "threshold", "in-scope esc.", "oos esc.")
    for column in columns:
        table.add_column(column, justify="right" if column else "left")
    results = {}
    for what, predictions in (("trained head", head_predictions), ("prompted", prompt_predictions)):
        if not predictions:
            continue
        figures = report(predictions, labels)
        in_scope_ece = expected_calibration_error([p for p in predictions if p.gold != OUT_OF_SCOPE])
        threshold, in_esc, oos_esc = at_in_scope_budget(predictions)
        results[what] = {
            **figures.model_dump(exclude={"table"}),
            "ece_in_scope": in_scope_ece,
            "threshold_20": threshold,
            "oos_escalated": oos_esc,
        }
        table.add_row(
            what,
            f"{figures.n_in_scope:,}+{figures.n_out_of_scope:,}",
            f"{figures.in_scope_accuracy:.3f}",
            f"{figures.macro_f1:.3f}",
            f"{figures.ece:.3f}",
            f"{in_scope_ece:.3f}",
            "-" if figures.auroc is None else f"{figures.auroc:.3f}",
            f"{threshold:.3f}",
            f"{in_esc:.1%}",
            f"{oos_esc:.1%}",
        )
    console.print(table)
    console.print(
        f"embedding: {embedder.sent:,} texts sent, {embedder.reused:,} from the cache"
        + (f", {rate:.1f} texts/s" if rate else "")
        + f"; fit {fit_s:.1f}s; temperature {head.info.temperature:.2f}; "
        f"prompted {sum(p.seconds for p in prompt_predictions) / max(1, len(prompt_predictions)):.2f}s/row; "
        f"wall {time.perf_counter() - started:.0f}s"
    )
    console.print_json(json.dumps({"data": name, "texts_per_second": rate, **results}, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", choices=["clinc", "bitext"], default=["clinc", "bitext"])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--db", type=Path, default=Path("heads-benchmark.db"), help="embedding cache")
    parser.add_argument(
        "--prompt-rows", type=int, default=300, help="test rows put to the prompted classifier (0: skip)"
    )
    args = parser.parse_args()
    for name in args.data:
        train, test = clinc() if name == "clinc" else bitext()
        asyncio.run(run(name, train, test, args.model, args.db, args.prompt_rows))


if __name__ == "__main__":
    main()

"""Plan memory on CLINC150: does reusing the plan of the nearest approved task promise what it keeps?

A task of the same intent as an approved one takes the same plan; any other does not. The memory
holds `--per-intent` approved tasks (CLINC150 train) for `--intents` intents; the queries (CLINC150
test) are half of those intents and half of intents the memory never saw. The logistic curve
p(same intent | similarity) is fitted on one half of the queries and measured on the other
(ECE, AUROC, share reused at p >= 0.5 and how often a reuse was right). Similarities are taken
after centring and scaling the embeddings by their mean and spread over texts of other intents.
`--write` stores the curve, the mean and the spread as the shipped calibration for the model
(shoal/agents/plan_calibration.json).

    uv run python benchmarks/plan_memory.py [--model embedded:smollm2-135m] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoal.agents.memory import SHIPPED, fit_curve, unit_rows
from shoal.backends import build_router
from shoal.config import Settings
from shoal.evaluation import Prediction, auroc, expected_calibration_error
from shoal.models.embeddings import Embedder
from shoal.store import Store

DATA = Path(__file__).resolve().parents[1] / "data" / "clinc150.json"


async def main(model: str, intents: int, per_intent: int, queries: int, write: bool, cache: Path | None) -> None:
    import numpy as np

    data = json.loads(DATA.read_text(encoding="utf-8"))
    rng = random.Random(0)
    names = sorted({intent for _, intent in data["train"]})
    rng.shuffle(names)
    known, unknown = set(names[:intents]), set(names[intents : 2 * intents])
    memory = [(t, i) for i in sorted(known) for t in [t for t, j in data["train"] if j == i][:per_intent]]
    asked = [(t, i) for t, i in data["test"] if i in known][: queries // 2]
    asked += [(t, i) for t, i in data["test"] if i in unknown][: queries // 2]
    rng.shuffle(asked)
    # texts of the remaining intents give the embeddings' mean and spread (shipped with the curve)
    spread = [t for t, i in data["train"] if i not in known and i not in unknown][::20][:400]

    db = cache or Path(tempfile.mkdtemp(prefix="shoal-plans-")) / "shoal.db"
    embedder = Embedder(build_router(Settings.load(env={})), model, cache=Store(db))
    others = await embedder.embed(spread)
    mean, scale = others.mean(axis=0), others.std(axis=0) + 1e-6
    mem = unit_rows((await embedder.embed([t for t, _ in memory]) - mean) / scale)
    ask = unit_rows((await embedder.embed([t for t, _ in asked]) - mean) / scale)
    sims = ask @ mem.T
    nearest = sims.argmax(axis=1)
    similarity = [float(sims[q, j]) for q, j in enumerate(nearest)]
    same = [memory[int(j)][1] == asked[q][1] for q, j in enumerate(nearest)]

    fit_idx = list(range(0, len(asked), 2))
    eval_idx = list(range(1, len(asked), 2))
    curve = fit_curve([similarity[i] for i in fit_idx], [same[i] for i in fit_idx], fitted_on="")
    if curve is None:
        raise SystemExit("one outcome never occurred: no curve can be fitted")
    p = [curve(similarity[i]) for i in eval_idx]
    gold = [same[i] for i in eval_idx]
    scored = [
        Prediction(text="", gold="same", predicted="same" if g else "other", confidence=pi, seconds=0.0)
        for pi, g in zip(p, gold, strict=True)
    ]
    ece = expected_calibration_error(scored)
    area = auroc(scored) or 0.0
    reused = [g for pi, g in zip(p, gold, strict=True) if pi >= 0.5]

    table = Table(title=f"plan memory on CLINC150, {model}: {len(memory)} approved tasks, {len(asked)} new tasks")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("curve", f"p = sigmoid({curve.slope:.2f} * sim + {curve.intercept:.2f})")
    table.add_row("held-out tasks (the other half fitted the curve)", str(len(eval_idx)))
    table.add_row("share of held-out tasks whose nearest approved task is of their kind", f"{np.mean(gold):.3f}")
    table.add_row("ECE (10 bins)", f"{ece:.3f}")
    table.add_row("AUROC", f"{area:.3f}")
    table.add_row("reused (p >= 0.5)", f"{len(reused) / len(gold):.1%}")
    table.add_row("reuses that were right", f"{np.mean(reused):.3f}" if reused else "-")
    Console().print(table)
    if write:
        shipped = json.loads(SHIPPED.read_text(encoding="utf-8")) if SHIPPED.exists() else {}
        shipped[model] = {
            "slope": round(curve.slope, 4),
            "intercept": round(curve.intercept, 4),
            "fitted_on": f"CLINC150 ({len(fit_idx)} tasks; benchmarks/plan_memory.py)",
            "held_out": {"n": len(eval_idx), "ece": round(ece, 4), "auroc": round(area, 4)},
            "mean": [round(float(v), 5) for v in mean],
            "scale": [round(float(v), 5) for v in scale],
        }
        SHIPPED.write_text(json.dumps(shipped, indent=2) + "\n", encoding="utf-8")
        print(f"wrote the curve for {model} to {SHIPPED}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--intents", type=int, default=40)
    parser.add_argument("--per-intent", type=int, default=3)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--cache", type=Path, default=None, help="a database to keep the embeddings in")
    args = parser.parse_args()
    asyncio.run(main(args.model, args.intents, args.per_intent, args.queries, args.write, args.cache))

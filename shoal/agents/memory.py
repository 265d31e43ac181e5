"""Plan memory: a plan a person or the frontier approved, reused for a task like its own.

Most tasks a team sends are variations of a few kinds, so the planner first looks for the
approved task nearest the new one (cosine similarity of the small model's embeddings) and
reuses its plan: the steps read `task`, so the same plan runs on the new task's text. The
confidence is a calibrated probability that the two tasks are of one kind (and so take one
plan), from the similarity through a logistic curve:

- fitted on the approved tasks themselves once there are enough of them (each task's nearest
  other approved task: same plan or not), so the promise is about this team's tasks;
- until then, the curve shipped for the embedding model (`plan_calibration.json`, fitted by
  `benchmarks/plan_memory.py` on CLINC150: same intent = same plan, held-out ECE and AUROC
  recorded beside it);
- with neither, no reuse: the planner prompts, and says why.

Approved plans come from the `example` table (specialist `planner`): plans a person gave or
approved in review, the frontier's plans, and plans given with `--plan`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from shoal.models.embeddings import Embedder

    Matrix = npt.NDArray[np.float32]

SHIPPED = Path(__file__).with_name("plan_calibration.json")
MIN_OWN = 20  # approved plans before the memory fits its own curve (and both outcomes seen)


@dataclass(frozen=True)
class Approved:
    task: str
    plan: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Curve:
    """p(same kind | similarity) = 1 / (1 + exp(-(slope * similarity + intercept)))."""

    slope: float
    intercept: float
    fitted_on: str  # what it was fitted on, for the evidence

    def __call__(self, similarity: float) -> float:
        z = self.slope * similarity + self.intercept
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


@dataclass(frozen=True)
class Recall:
    approved: Approved
    similarity: float
    probability: float
    curve: Curve


def _shipped(embed_model: str, path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = data.get(embed_model) if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else None


def shipped_curve(embed_model: str, path: Path = SHIPPED) -> Curve | None:
    entry = _shipped(embed_model, path)
    if entry is None:
        return None
    return Curve(float(entry["slope"]), float(entry["intercept"]), str(entry.get("fitted_on", "shipped data")))


def shipped_space(embed_model: str, path: Path = SHIPPED) -> tuple[Matrix, Matrix] | None:
    """The mean and spread of the model's embeddings over many texts. A small causal model's
    mean-pooled vectors all point one way (cosine 0.8 to 1.0 between any two texts); centred
    and scaled, similarity tells kinds of task apart far better."""
    import numpy as np

    entry = _shipped(embed_model, path)
    if entry is None or "mean" not in entry or "scale" not in entry:
        return None
    return np.asarray(entry["mean"], dtype=np.float32), np.asarray(entry["scale"], dtype=np.float32)


def fit_curve(similarities: Sequence[float], same: Sequence[bool], *, fitted_on: str) -> Curve | None:
    """Logistic regression of `same` on `similarity` (Newton's method; two parameters need no
    library). None when one outcome never occurs: no curve can say where it changes."""
    import numpy as np

    x = np.asarray(similarities, dtype=np.float64)
    y = np.asarray(same, dtype=np.float64)
    if len(x) < 2 or y.min() == y.max():
        return None
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (y - p) - 1e-3 * weights  # a whisker of L2: separable data stays finite
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights += step
        if np.abs(step).max() < 1e-8:
            break
    return Curve(float(weights[0]), float(weights[1]), fitted_on)


def same_plan(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two plans are the same when their steps call the same specialists on the same inputs."""

    def shape(plan: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
        return [(s.get("specialist", ""), tuple(s.get("inputs") or ())) for s in plan.get("steps", [])]

    return shape(a) == shape(b)


class PlanMemory:
    """Approved plans, searched by the embedding of their task."""

    def __init__(self, embedder: Embedder, approved: Callable[[], list[Approved]]) -> None:
        self.embedder = embedder
        self._approved = approved
        self._items: list[Approved] = []
        self._vectors: Matrix | None = None
        self._curve: Curve | None = None
        self._space = shipped_space(str(embedder.model))

    async def recall(self, task: str) -> Recall | str | None:
        """The nearest approved task with the probability that its plan fits; None with nothing
        approved; a sentence saying why when no calibrated curve exists yet."""
        import numpy as np

        await self._refresh()
        if not self._items or self._vectors is None:
            return None
        if self._curve is None:
            return (
                f"no calibration for plan reuse on {self.embedder.model} yet: it needs {MIN_OWN} approved plans "
                "of at least two kinds"
            )
        query = self._unit(await self.embedder.embed([task], remember=False))[0]
        sims = self._vectors @ query
        best = int(np.argmax(sims))
        similarity = float(sims[best])
        return Recall(self._items[best], similarity, self._curve(similarity), self._curve)

    async def _refresh(self) -> None:
        fresh = self._approved()
        if not fresh:
            return
        # one plan per task text: the latest approval wins
        known = {item.task: item for item in [*self._items, *fresh]}
        self._items = list(known.values())
        raw = await self.embedder.embed([item.task for item in self._items])
        if self._space is None and len(self._items) >= MIN_OWN:
            self._space = (raw.mean(axis=0), raw.std(axis=0) + 1e-6)
        self._vectors = self._unit(raw)
        self._curve = self._own_curve() or shipped_curve(str(self.embedder.model))

    def _own_curve(self) -> Curve | None:
        """Leave-one-out on the approved tasks: each one's nearest other task, same plan or not."""
        import numpy as np

        if len(self._items) < MIN_OWN or self._vectors is None:
            return None
        sims = self._vectors @ self._vectors.T
        np.fill_diagonal(sims, -np.inf)
        nearest = sims.argmax(axis=1)
        similarities = [float(sims[i, j]) for i, j in enumerate(nearest)]
        same = [same_plan(self._items[i].plan, self._items[int(j)].plan) for i, j in enumerate(nearest)]
        return fit_curve(similarities, same, fitted_on=f"{len(self._items)} approved plans of this shoal")

    def _unit(self, matrix: Matrix) -> Matrix:
        if self._space is not None:
            mean, scale = self._space
            matrix = (matrix - mean) / scale
        return unit_rows(matrix)


def unit_rows(matrix: Matrix) -> Matrix:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit

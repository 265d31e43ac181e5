"""A planner that remembers: approved plans reused for tasks like theirs, with a calibrated promise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shoal.agents.memory import MIN_OWN, Approved, Curve, PlanMemory, fit_curve, same_plan, shipped_curve
from shoal.agents.planner import DESCRIPTIONS, Plan, Planner, TaskInput
from shoal.backends import build_router
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.embeddings import Embedder
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend

SMOL = "embedded:smollm2-135m"
CLASSIFY = {"steps": [{"id": "kind", "specialist": "classifier", "instruction": "the category", "inputs": ["task"]}]}
SUMMARISE = {"steps": [{"id": "gist", "specialist": "summarizer", "instruction": "one line", "inputs": ["task"]}]}
APPROVED_TASK = "Which category does this support ticket belong to: my parcel never arrived"
PARAPHRASE = "What category is this customer ticket in: the package I ordered has not arrived"
UNRELATED = "Write a Python function that returns the nth Fibonacci number"


def test_the_curve_is_fitted_and_monotone() -> None:
    curve = fit_curve(
        [0.2, 0.3, 0.4, 0.6, 0.8, 0.9, 0.35, 0.85], [False, False, False, True, True, True, True, False], fitted_on="t"
    )
    assert curve is not None and curve(0.95) > 0.5 > curve(0.25)
    assert fit_curve([0.1, 0.9], [True, True], fitted_on="t") is None  # one outcome: no curve


def test_same_plan_compares_specialists_and_inputs_not_wording() -> None:
    reworded = json.loads(json.dumps(CLASSIFY))
    reworded["steps"][0]["instruction"] = "say which category"
    assert same_plan(CLASSIFY, reworded) and not same_plan(CLASSIFY, SUMMARISE)


def test_the_shipped_curve_covers_the_default_model() -> None:
    curve = shipped_curve(SMOL)
    assert curve is not None and "CLINC150" in curve.fitted_on
    assert curve(0.99) > 0.5 > curve(0.0)


def _planner(router: ModelRouter, approved: list[Approved]) -> Planner:
    planner = Planner(router, "scripted:x", dict(DESCRIPTIONS))
    given = list(approved)

    def fresh() -> list[Approved]:
        out = list(given)
        given.clear()
        return out

    planner.use_memory(PlanMemory(Embedder(router, "scripted:x"), fresh))
    return planner


class AngleEmbedder:
    """Texts "<angle> ..." as unit vectors at that angle (degrees): similarities by design."""

    model = "scripted:angles"

    async def embed(self, texts: list[str], *, remember: bool = True) -> np.ndarray:
        angles = np.radians([float(t.split()[0]) for t in texts])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


async def test_with_enough_approved_plans_the_memory_fits_its_own_curve() -> None:
    backend = ScriptedBackend(lambda _: json.dumps(SUMMARISE))
    planner = Planner(ModelRouter(lambda _: backend), "scripted:x", dict(DESCRIPTIONS))
    # classifications near 0 degrees, summaries near 90, and between them tasks of either kind:
    # leave-one-out sees close neighbours of one kind and distant ones of both
    approved = [Approved(f"{a} categorise", CLASSIFY, "human") for a in (0, 2, 4, 6, 8, 10, 30, 40)]
    approved += [Approved(f"{a} summarise", SUMMARISE, "file") for a in (90, 88, 86, 84, 82, 80, 60, 50)]
    approved += [Approved(f"{a} either", CLASSIFY if a % 2 else SUMMARISE, "human") for a in (45, 47, 55, 35)]
    assert len(approved) >= MIN_OWN
    given = list(approved)
    planner.use_memory(PlanMemory(AngleEmbedder(), lambda: [given.pop() for _ in range(len(given))]))  # type: ignore[arg-type]
    result = await planner.run(TaskInput(task="3 categorise this one"))
    assert result.output is not None and same_plan(result.output.model_dump(), CLASSIFY), result.explain()
    assert result.confidence > 0.5 and not backend.requests  # no prompt: the memory answered
    assert f"{len(approved)} approved plans of this shoal" in result.explain()


async def test_with_no_curve_the_planner_prompts_and_says_why(tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda _: json.dumps(SUMMARISE))
    router = ModelRouter(lambda _: backend)  # the scripted model has no shipped curve
    planner = _planner(router, [Approved(APPROVED_TASK, CLASSIFY, "human")])
    result = await planner.run(TaskInput(task=APPROVED_TASK))
    assert len(backend.requests) == 1
    assert "no calibration for plan reuse" in result.explain()


async def test_a_plan_given_with_plan_is_remembered(tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda _: '{"label": "ORDER"}')
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.0)}
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        await shoal.run(APPROVED_TASK, plan=CLASSIFY)
        (example,) = shoal.store.examples("planner")
    assert example.source == "file" and example.text == APPROVED_TASK
    assert same_plan(json.loads(example.label), CLASSIFY)


@pytest.mark.embedded
async def test_an_approved_plan_is_reused_for_a_paraphrase_and_not_for_an_unrelated_task() -> None:
    router = build_router(Settings.load(env={}))
    planner = Planner(router, SMOL, dict(DESCRIPTIONS))
    memory = [Approved(APPROVED_TASK, CLASSIFY, "human"), Approved("Summarise these meeting notes", SUMMARISE, "file")]
    planner.use_memory(PlanMemory(Embedder(router, SMOL), lambda: [memory.pop() for _ in range(len(memory))]))
    reused = await planner.run(TaskInput(task=PARAPHRASE))
    assert reused.output == Plan.model_validate(CLASSIFY), reused.explain()
    assert reused.calls == [] and 0.5 <= reused.confidence < 1.0
    assert "nearest approved task" in reused.explain() and "CLINC150" in reused.explain()
    prompted = await planner.run(TaskInput(task=UNRELATED))
    assert len(prompted.calls) == 1  # unlike anything approved: the planner prompted
    memory_signal = next(s for s in prompted.evidence if s.name == "plan_memory")
    assert memory_signal.value < 0.5


def test_a_curve_is_a_probability() -> None:
    curve = Curve(slope=40.0, intercept=-30.0, fitted_on="t")
    assert curve(0.75) == pytest.approx(0.5)
    assert 0.0 < curve(-1.0) < curve(0.75) < curve(1.0) < 1.0

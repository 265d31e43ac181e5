from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bitext import DATA

from shoal.config import Settings
from shoal.engine import Shoal
from shoal.errors import InputFileError
from shoal.evaluation import (
    EvalSet,
    Labelled,
    LabelledDataError,
    Prediction,
    auroc,
    eval_set,
    evaluate,
    expected_calibration_error,
    load_labelled,
    macro_f1,
    predict,
    report,
    stratified,
)
from shoal.models.base import ModelRef
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.specialists.classifier import Classifier

CLINC = DATA / "clinc150.json"


def p(gold: str, predicted: str, confidence: float) -> Prediction:
    return Prediction(text=gold, gold=gold, predicted=predicted, confidence=confidence, seconds=0.1)


def test_metrics_on_known_values() -> None:
    preds = [p("a", "a", 0.9), p("a", "b", 0.2), p("b", "b", 0.8), p("b", "b", 0.6)]
    assert macro_f1(preds, ["a", "b"]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert auroc(preds) == 1.0
    # bins: 0.2 (wrong) |0.6 right| 0.8 right | 0.9 right
    assert expected_calibration_error(preds) == pytest.approx((0.2 + 0.4 + 0.2 + 0.1) / 4)
    assert auroc([p("a", "a", 0.5), p("a", "b", 0.5)]) == 0.5
    assert auroc([p("a", "a", 0.5)]) is None


def test_threshold_recommendation_and_out_of_scope() -> None:
    preds = [p("a", "a", 0.9), p("a", "b", 0.3), p("b", "b", 0.8), p("oos", "a", 0.1)]
    result = report(preds, ["a", "b"], target_accuracy=1.0)
    assert result.n_out_of_scope == 1 and result.in_scope_accuracy == pytest.approx(2 / 3)
    best = result.recommended
    assert best is not None and best.escalated == 0.5 and best.system_accuracy == 1.0
    assert best.out_of_scope_escalated == 1.0
    worse = report(preds, ["a", "b"], target_accuracy=1.0, frontier_accuracy=0.5)
    assert worse.recommended is None


def test_loaders(tmp_path: Path) -> None:
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("instruction,category\nhello,A\nbye,B\n")
    assert load_labelled(csv_file, text_column="instruction", label_column="category")[1] == Labelled(
        text="bye", label="B"
    )
    with pytest.raises(ValueError, match="no column") as caught:
        load_labelled(csv_file)
    assert isinstance(caught.value, InputFileError) and caught.value.exit_code == 2  # one line at the command
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n')
    assert len(load_labelled(jsonl)) == 2
    clinc = load_labelled(CLINC, split="test")
    assert len(clinc) == 4500 + 1000 and clinc[-1].label == "oos"
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_labelled(CLINC, split="dev")
    sample = stratified(clinc, 2)
    assert len(sample) == 151 * 2 and sample == stratified(clinc, 2)


@pytest.mark.embedded
@pytest.mark.timeout(900)  # 158 prompts over 150 labels: minutes on 2 cores, more on a busy machine
def test_shoal_eval_on_clinc150(tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    args = [sys.executable, "-m", "shoal.cli", "eval", str(CLINC), "--per-label", "1", "--oos", "8", "--json"]
    first = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["n"] == 158 and result["n_out_of_scope"] == 8
    assert result["in_scope_accuracy"] > 3 / 150, "well above chance on 150 intents"
    assert 0.0 <= result["ece"] <= 1.0 and result["auroc"] is not None
    assert result["mean_confidence_out_of_scope"] < 0.5
    assert 21 <= len(result["table"]) <= 30
    assert len(out.read_text().splitlines()) == 158
    # re-running resumes from the predictions file: nothing is classified twice
    again = subprocess.run(
        [*args, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "SHOAL_DEFAULT_MODEL": "ollama:none"},  # a model call would now fail
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["accuracy"] == result["accuracy"]


def test_eval_set_samples_and_refuses_an_empty_one(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"t{i},{'AB'[i % 2]}\n" for i in range(10)) + "x,oos\ny,oos\n")
    chosen = eval_set(data, per_label=2, out_of_scope=1)
    assert chosen.labels == ["A", "B"] and len(chosen.rows) == 5
    assert sum(r.label == "oos" for r in chosen.rows) == 1
    with pytest.raises(LabelledDataError, match="holds no labelled rows"):
        eval_set(data, per_label=0, out_of_scope=0)


ROWS = [Labelled(text="refund me please", label="REFUND"), Labelled(text="where is my parcel", label="ORDER")]


async def test_predict_writes_as_it_goes_and_a_rerun_resumes(tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    backend = ScriptedBackend(['{"label": "REFUND"}', '{"label": "REFUND"}'])
    router = ModelRouter(lambda _: backend)
    seen: list[tuple[str, int, int, float]] = []
    classifier = Classifier(router, "scripted:small", ["ORDER", "REFUND"])
    first = await predict(classifier, ROWS, out=out, what="small", progress=lambda *a: seen.append(a))
    assert [p.predicted for p in first] == ["REFUND", "REFUND"] and len(backend.requests) == 2
    assert seen == [("small", 1, 2, 1.0), ("small", 2, 2, 0.5)]
    assert len(out.read_text().splitlines()) == 2
    again = await predict(
        Classifier(ModelRouter(lambda _: ScriptedBackend()), "scripted:small", ["ORDER", "REFUND"]), ROWS, out=out
    )
    assert again == first, "read back from the file: no model call (the scripted backend has none to give)"
    out.write_text("not a prediction\n")
    with pytest.raises(InputFileError, match="line 1 is not a prediction"):
        await predict(classifier, ROWS, out=out)


async def test_evaluate_a_model_or_a_configured_specialist(tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda request: '{"label": "ORDER"}')
    engine = Shoal(Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")}), router=ModelRouter(lambda _: backend))
    data = EvalSet(rows=ROWS, labels=["ORDER", "REFUND"])
    async with engine:
        prompted = await evaluate(engine, data, model=ModelRef.parse("ollama:small"), target_accuracy=0.5)
        configured = await evaluate(engine, data, specialist="intent")
    assert prompted.what == "ollama:small" and prompted.report.n == 2 and prompted.report.accuracy == 0.5
    assert configured.what == "intent (embedded:smollm2-135m, prompted)"
    assert "the user's request" in backend.requests[0].messages[0].content  # prompted over the data's labels

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bitext import DATA

from shoal.evaluation import (
    Labelled,
    Prediction,
    auroc,
    expected_calibration_error,
    load_labelled,
    macro_f1,
    report,
    stratified,
)

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
    with pytest.raises(ValueError, match="no column"):
        load_labelled(csv_file)
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

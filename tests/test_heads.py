"""Trained classifier heads: the logic on a scripted embedder (fast), then the real thing on
the embedded model: CLINC150, the embedding cache, and the flywheel end to end."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from bitext import DATA, categories, rows

from shoal.agents.escalation import Ladder, LadderConfig
from shoal.backends import build_backend
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.errors import HeadError
from shoal.evaluation import OUT_OF_SCOPE, Labelled, Prediction, load_labelled, report, stratified
from shoal.models.base import ChatRequest
from shoal.models.embeddings import Embedder, text_key
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.privacy import Redactor
from shoal.specialists.classifier import Classifier, TextInput
from shoal.specialists.heads import TrainedHead
from shoal.store import Store
from shoal.training import split, train_head

SMOL = "embedded:smollm2-135m"
CLINC = DATA / "clinc150.json"

# three labels whose texts share words within a label and not across
TOY = {
    "refund": ["refund my money", "i want a refund now", "money back refund please", "refund the charge"],
    "shipping": ["where is my parcel", "parcel shipping late", "track my shipping", "shipping parcel lost"],
    "login": ["cannot login password", "reset my password", "login fails password", "password login help"],
}


def toy() -> tuple[list[str], list[str]]:
    texts = [t for texts in TOY.values() for t in texts]
    labels = [label for label, texts in TOY.items() for _ in texts]
    return texts, labels


def scripted_router() -> tuple[ModelRouter, ScriptedBackend]:
    backend = ScriptedBackend()
    return ModelRouter(lambda _: backend), backend


async def toy_head(router: ModelRouter, model: str = "scripted:emb") -> TrainedHead:
    texts, labels = toy()
    vectors = await Embedder(router, model).embed(texts)
    return TrainedHead.fit(vectors, labels, texts, embed_model=model, min_per_label=3)


async def test_a_head_learns_calibrates_and_round_trips() -> None:
    router, _ = scripted_router()
    head = await toy_head(router)
    assert head.labels == ["login", "refund", "shipping"]
    assert head.info.n_calibration == 3 and head.info.n_train == 9
    assert 0.05 <= head.info.temperature <= 20
    probe = await Embedder(router, "scripted:emb").embed(["please refund my money"])
    assert head.predict(probe)[0].label == "refund"
    text, label, similarity = head.nearest(probe[0])[0]
    assert label == "refund" and "refund" in text and similarity > 0.5
    again = TrainedHead.from_bytes(head.to_bytes())
    assert again.info == head.info
    assert again.predict(probe)[0] == head.predict(probe)[0]


async def test_a_trained_classifier_answers_from_its_head_and_prompts_the_frontier() -> None:
    router, backend = scripted_router()
    classifier = Classifier(router, "scripted:small", list(TOY), threshold=0.5, name="topic")
    classifier.use_head(await toy_head(router), Embedder(router, "scripted:emb"))
    result = await classifier.run(TextInput(text="track my parcel please"))
    assert result.output is not None and result.output.label == "shipping"
    assert {s.name for s in result.evidence} == {"head_probability", "margin", "nearest"}
    assert "parcel" in next(s for s in result.evidence if s.name == "nearest").detail
    assert result.model.startswith("scripted:emb+head:topic")
    assert len(result.calls) == 1 and not backend.requests  # no chat call: the head answered
    assert not classifier.resamplable
    # the frontier rung names a model: that always prompts
    backend._script = lambda _: '{"label": "login"}'
    upper = await classifier.run(TextInput(text="anything"), model="scripted:frontier")
    assert upper.output is not None and upper.output.label == "login" and len(backend.requests) == 1


async def test_the_ladder_does_not_resample_a_head() -> None:
    router, backend = scripted_router()
    classifier = Classifier(router, "scripted:small", list(TOY), threshold=0.999, name="topic")
    classifier.use_head(await toy_head(router), Embedder(router, "scripted:emb"))
    outcome = await Ladder(LadderConfig(threshold=0.999, resample=3, human=False)).run(
        classifier,
        TextInput(text="good morning to you"),  # no word the head knows: unsure
    )
    assert [e.rung for e in outcome.escalations] == []  # no resample rung, no frontier configured
    assert outcome.status == "failed" and not backend.requests


async def test_clear_errors_for_heads_that_cannot_be_used() -> None:
    router, _ = scripted_router()
    texts, labels = toy()
    vectors = await Embedder(router, "scripted:emb").embed(texts)
    with pytest.raises(HeadError, match=r"too few examples for 1 label\(s\): refund \(2\)"):
        TrainedHead.fit(vectors[2:], labels[2:], texts[2:], embed_model="scripted:emb", min_per_label=3)
    with pytest.raises(HeadError, match="at least two labels"):
        TrainedHead.fit(vectors[:4], labels[:4], texts[:4], embed_model="scripted:emb")
    head = await toy_head(router)
    narrow = Classifier(router, "scripted:small", ["refund", "shipping"], name="narrow")
    with pytest.raises(HeadError, match="labels this classifier does not have: login"):
        narrow.use_head(head, Embedder(router, "scripted:emb"))
    wide = Classifier(router, "scripted:small", [*TOY, "other"], name="wide")
    with pytest.raises(HeadError, match=r"trained on embeddings of scripted:emb.*embed_model"):
        wide.use_head(head, Embedder(router, "scripted:other"))
    multi = Classifier(router, "scripted:small", list(TOY), multi_label=True, name="multi")
    with pytest.raises(HeadError, match="multi-label"):
        multi.use_head(head, Embedder(router, "scripted:emb"))
    with pytest.raises(HeadError, match="expects 64"):
        head.check_vectors(vectors[:, :10], "scripted:emb")
    with pytest.raises(HeadError, match="not a readable shoal head"):
        TrainedHead.from_bytes(b"PK\x03\x04 not really a zip")


async def test_the_cache_embeds_each_text_once(tmp_path: Path) -> None:
    router, backend = scripted_router()
    store = Store(tmp_path / "shoal.db")
    texts, _ = toy()
    first = await Embedder(router, "scripted:emb", cache=store).embed([*texts, texts[0]])
    assert len(backend.embedded) == len(texts)  # the repeated text went once
    again = Embedder(router, "scripted:emb", cache=store)
    second = await again.embed(texts)
    assert len(backend.embedded) == len(texts) and again.sent == 0 and again.reused == len(texts)
    assert (first[: len(texts)] == second).all()
    other = Embedder(router, "scripted:emb2", cache=store)
    await other.embed(texts[:2])
    assert other.sent == 2  # keyed by model too
    passing = Embedder(router, "scripted:emb", cache=store)
    await passing.embed(["a ticket seen once", texts[0]], remember=False)  # what a classifier answering does
    assert passing.sent == 1 and passing.reused == 1
    assert store.cached_vectors("scripted:emb", [text_key("a ticket seen once")]) == {}


def test_the_held_out_slice_is_stable_and_keeps_small_labels_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "shoal.db")
    data = [
        {"specialist": "c", "text": f"text {i}", "label": "big" if i < 50 else "small", "source": "file"}
        for i in range(53)
    ]
    store.add_examples(data)
    train, held = split(store.examples("c"), share=0.2, min_per_label=3)
    assert {r.label for r in held} == {"big"} and 5 <= len(held) <= 18
    assert sum(r.label == "small" for r in train) == 3
    store.add_examples([{"specialist": "c", "text": f"more {i}", "label": "big", "source": "file"} for i in range(20)])
    _, held_again = split(store.examples("c"), share=0.2, min_per_label=3)
    assert {r.text for r in held} <= {r.text for r in held_again}  # adding data moves nothing out


async def test_train_head_refuses_labels_the_classifier_lacks(tmp_path: Path) -> None:
    router, _ = scripted_router()
    store = Store(tmp_path / "shoal.db")
    classifier = Classifier(router, "scripted:small", ["refund", "shipping"], name="topic")
    texts, labels = toy()
    with pytest.raises(HeadError, match=r"labels the topic classifier does not know: login \(4\)"):
        await train_head(
            classifier,
            "topic",
            store=store,
            embedder=Embedder(router, "scripted:emb", cache=store),
            files=[Labelled(text=t, label=lbl) for t, lbl in zip(texts, labels, strict=True)],
        )
    assert store.examples("topic") == []  # nothing half-kept
    with pytest.raises(HeadError, match="no labelled examples for topic"):
        await train_head(classifier, "topic", store=store, embedder=Embedder(router, "scripted:emb"))


# --- the real model -------------------------------------------------------------------------


@pytest.mark.embedded
@pytest.mark.timeout(900)
async def test_clinc150_head_beats_prompting_and_knows_when_it_is_out_of_scope(tmp_path: Path) -> None:
    """A stratified slice of CLINC150: 8 training rows per intent, 2 test rows per intent, 100
    out-of-scope rows. Prompting the same model scored 0.21 in-scope accuracy (session 1, 1,350 rows)."""
    store = Store(tmp_path / "shoal.db")
    settings = Settings.load(env={})
    router = ModelRouter(lambda name: build_backend(name, settings))
    train = [r for r in load_labelled(CLINC, split="train", with_out_of_scope=False)]
    labels = sorted({r.label for r in train})
    classifier = Classifier(router, SMOL, labels, threshold=0.7, name="intent")
    embedder = Embedder(router, SMOL, cache=store)
    result, head = await train_head(
        classifier, "intent", store=store, embedder=embedder, files=stratified(train, 8), baseline=0
    )
    assert result.activated and result.labels == 150 and result.embedded == 1200

    test = load_labelled(CLINC, split="test")
    chosen = stratified([r for r in test if r.label != OUT_OF_SCOPE], 2) + stratified(
        [r for r in test if r.label == OUT_OF_SCOPE], 100
    )
    vectors = await embedder.embed([r.text for r in chosen])
    predictions = [
        Prediction(text=r.text, gold=r.label, predicted=p.label, confidence=p.probability, seconds=0.0)
        for r, p in zip(chosen, head.predict(vectors), strict=True)
    ]
    figures = report(predictions, labels)
    oos = [p for p in predictions if p.gold == OUT_OF_SCOPE]
    inside = [p for p in predictions if p.gold != OUT_OF_SCOPE]
    oos_escalated = sum(p.confidence < classifier.threshold for p in oos) / len(oos)
    in_escalated = sum(p.confidence < classifier.threshold for p in inside) / len(inside)
    print(
        f"\nCLINC150 head: in-scope acc {figures.in_scope_accuracy:.3f}, macro-F1 {figures.macro_f1:.3f}, "
        f"ECE {figures.ece:.3f}, AUROC {figures.auroc}, at {classifier.threshold}: in-scope escalated "
        f"{in_escalated:.1%}, out-of-scope escalated {oos_escalated:.1%}; temperature {head.info.temperature:.2f}; "
        f"{result.texts_per_second} texts/s"
    )
    assert figures.in_scope_accuracy > 0.45  # chance is 1/150; prompting gave 0.21
    assert figures.ece < 0.2
    assert figures.auroc is not None and figures.auroc > 0.75
    assert oos_escalated > 0.6 and oos_escalated > in_escalated
    # a second training run on the same data embeds nothing new
    calls: list[int] = []
    original = router.embed

    async def counting(ref: Any, texts: Any) -> Any:
        calls.append(len(texts))
        return await original(ref, texts)

    router.embed = counting  # type: ignore[method-assign]
    classifier.use_head(head, embedder)
    again, _ = await train_head(classifier, "intent", store=store, embedder=Embedder(router, SMOL, cache=store))
    assert calls == [] and again.embedded == 0 and again.reused == 1200
    # same data, same vectors: the same head, compared with the active one and found not worse
    assert again.before is not None and again.before.what == "head v1"
    assert again.after.accuracy == again.before.accuracy and again.activated and again.version == 2


def oracle_backend(truth: dict[str, str]) -> ScriptedBackend:
    """The frontier: knows every gold label (so its answers are what a person would give). It sees
    texts as the privacy redactor sends them, so it knows them in that form too."""
    redactor = Redactor()
    shown = {redactor.redact(text)[0]: label for text, label in truth.items()}

    def answer(request: ChatRequest) -> str:
        return json.dumps({"label": shown[request.messages[-1].content]})

    return ScriptedBackend(answer)


@pytest.mark.embedded
@pytest.mark.timeout(900)
async def test_the_flywheel_escalations_become_examples_and_escalation_falls(tmp_path: Path) -> None:
    labels = categories()
    by_label: dict[str, list[str]] = {label: [] for label in labels}
    for row in rows()[::7]:
        by_label[row["category"]].append(row["instruction"])
    taught = [(text, label) for label in labels for text in by_label[label][:8]]
    held = [(text, label) for label in labels for text in by_label[label][8:11]]
    truth = dict(taught + held)

    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.frontier_model = "scripted:oracle"
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.5)}
    oracle = oracle_backend(truth)
    embedded = build_backend("embedded", settings)
    shoal = Shoal(settings, router=ModelRouter(lambda name: oracle if name == "scripted" else embedded))
    classifier = shoal.trainable("classifier")
    plan = {"steps": [{"id": "kind", "specialist": "classifier", "instruction": "category", "inputs": ["task"]}]}

    async def escalated_share() -> float:
        results = [await classifier.run(TextInput(text=text)) for text, _ in held]
        return sum(r.confidence < classifier.threshold for r in results) / len(results)

    before = await escalated_share()
    try:
        for text, _ in taught:
            report_ = await shoal.run(text, plan=plan)
            assert report_.status == "done"
        stored = shoal.store.examples("classifier")
        sources = Counter(e.source for e in stored)
        assert sources["frontier"] >= len(taught) * 0.8  # the small model was unsure of nearly all
        assert all(e.label == truth[e.text] and e.run_id for e in stored)

        result = await shoal.train("classifier", baseline=0, min_per_label=3)
        assert result.activated and result.by_source == {"frontier": len(stored)}
        after = await escalated_share()
        print(f"\nflywheel: {len(stored)} frontier answers kept; held-out escalated {before:.0%} -> {after:.0%}")
        assert after < before
        # the head now answers inside the graph too, and says so
        report_ = await shoal.run(held[0][0], plan=plan)
        step = shoal.store.steps(report_.run_id)[0]
        assert "+head:classifier@v1" in (step.model or "")
    finally:
        await shoal.aclose()


def shoal_cli(tmp: Path, *args: str) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_DB": str(tmp / "shoal.db"), "COLUMNS": "200"},
        cwd=tmp,
        timeout=600,
    )


def write_labelled(path: Path, per_label: int, *, column: str, extra: Sequence[tuple[str, str]] = ()) -> int:
    import csv

    chosen: dict[str, list[str]] = {}
    for row in rows()[::5]:
        chosen.setdefault(row[column], [])
        if len(chosen[row[column]]) < per_label:
            chosen[row[column]].append(row["instruction"])
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", column])
        lines = [(text, label) for label, texts in chosen.items() for text in texts] + list(extra)
        writer.writerows(lines)
    return len(lines)


@pytest.mark.embedded
def test_train_and_heads_commands(tmp_path: Path) -> None:
    n = write_labelled(tmp_path / "categories.csv", 5, column="category")
    done = shoal_cli(
        tmp_path, "train", "category", "--data", "categories.csv", "--text", "instruction", "--label", "category",
        "--baseline", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{n} examples ({n} file), 11 labels" in done.stdout and "head v1 activated" in done.stdout
    scored = shoal_cli(
        tmp_path, "eval", "categories.csv", "--text", "instruction", "--label", "category", "--specialist", "category",
        "--json",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    figures = json.loads(scored.stdout)
    assert figures["n"] == n and figures["in_scope_accuracy"] > 0.5  # rows it was trained on, mostly
    listing = shoal_cli(tmp_path, "heads")
    assert "category" in listing.stdout and "v1" in listing.stdout and "yes" in listing.stdout
    assert shoal_cli(tmp_path, "train", "category", "--activate", "1").returncode == 0
    missing = shoal_cli(tmp_path, "train", "category", "--activate", "7")
    assert missing.returncode == 1 and "no head version 7" in missing.stderr
    write_labelled(tmp_path / "bad.csv", 5, column="category", extra=[("hello", "NOT_A_CATEGORY")])
    bad = shoal_cli(tmp_path, "train", "category", "--data", "bad.csv", "--text", "instruction", "--label", "category")
    assert bad.returncode == 1 and "does not know: NOT_A_CATEGORY (1)" in bad.stderr
    wrong = shoal_cli(tmp_path, "train", "summary")
    assert wrong.returncode == 1 and "only classifiers can be trained" in wrong.stderr


@pytest.mark.embedded
@pytest.mark.timeout(900)
async def test_ticket_triage_answers_category_and_intent_from_trained_heads(tmp_path: Path) -> None:
    """The README's recipe: train the ticket classifiers on Bitext, then triage."""
    from shoal.tickets.files import TicketRow

    write_labelled(tmp_path / "intents.csv", 8, column="intent")
    write_labelled(tmp_path / "categories.csv", 8, column="category")
    config = Path(__file__).resolve().parents[1] / "examples" / "shoal.toml"
    settings = Settings.load(config, env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    for name in ("category", "intent"):  # the example pins shipped head files; this trains its own
        settings.specialists[name].head = None
    shoal = Shoal(settings)
    try:
        intent = await shoal.train(
            "intent", files=load_labelled(tmp_path / "intents.csv", text_column="instruction", label_column="intent"),
            baseline=0,
        )  # fmt: skip
        category = await shoal.train(
            "category",
            files=load_labelled(tmp_path / "categories.csv", text_column="instruction", label_column="category"),
            baseline=0,
        )
        assert intent.activated and category.activated and intent.labels == 27
        texts = [r["instruction"] for r in rows()[3::601][:3]]
        outcomes = await shoal.triage([TicketRow(key=f"T{i}", line=i, text=t) for i, t in enumerate(texts)])
        assert len(outcomes) == 3
        for outcome in outcomes:
            steps = {s.step_id: s for s in shoal.store.steps(outcome.run_id or "")}
            for name in ("category", "intent"):
                answered = steps[name]
                assert "+head:" in (answered.model or "") or answered.answered_by in ("frontier", "human"), answered
                evidence = json.loads(answered.evidence_json or "[]")
                assert any(e["name"] == "nearest" for e in evidence) or answered.status == "waiting"
    finally:
        await shoal.aclose()


async def test_a_persons_answer_becomes_a_labelled_example(tmp_path: Path) -> None:
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.frontier_model = None
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.9)}
    backend = ScriptedBackend(lambda _: '{"label": "ORDER"}')  # no logprobs: confidence 0, so a person decides
    plan = {"steps": [{"id": "kind", "specialist": "classifier", "instruction": "category", "inputs": ["task"]}]}
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        waiting = await shoal.run("I was charged twice, please refund me", plan=plan)
        assert waiting.status == "waiting" and shoal.store.examples("classifier") == []
        done = await shoal.review(waiting.reviews[0].id, "REFUND", who="dana")
        assert done.status == "done"
        [example] = shoal.store.examples("classifier")
        assert (example.text, example.label, example.source) == (
            "I was charged twice, please refund me",
            "REFUND",
            "human",
        )
        assert example.run_id == waiting.run_id and example.step_id == "kind"


def test_the_activation_rule() -> None:
    from shoal.training import Metrics, not_worse

    def m(accuracy: float, ece: float, accepted: float | None) -> Metrics:
        return Metrics(
            what="x", n=100, accuracy=accuracy, macro_f1=accuracy, ece=ece, auroc=None, escalated=0.3,
            accepted_accuracy=accepted, threshold=0.7,
        )  # fmt: skip

    assert not_worse(m(0.6, 0.2, 0.9), None)[0]
    # far more accurate than a prompt that is never right and says so (small ECE): activated
    assert not_worse(m(0.6, 0.17, 0.9), m(0.1, 0.12, None))[0]
    ok, why = not_worse(m(0.5, 0.05, 0.9), m(0.6, 0.05, 0.9))
    assert not ok and "below the current 0.600" in why
    ok, why = not_worse(m(0.8, 0.05, 0.80), m(0.8, 0.05, 0.95))
    assert not ok and "right 80.0% of the time, against 95.0%" in why

"""Replies come from knowledge a person approved: retrieval, placeholders, abstaining, the flywheel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.backends import build_router
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.errors import ConfigError
from shoal.models.embeddings import Embedder
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import AnsweredBy, ReviewStatus, TicketStatus
from shoal.tickets.files import TicketRow
from shoal.tickets.knowledge import BUILT_IN, KnowledgeBase, KnowledgeItem, fill, load_knowledge
from shoal.tickets.plan import FIELDS
from shoal.tickets.reply import ReplyDrafter, ReplyInput
from shoal.tickets.settings import BITEXT_INTENTS

SMOL = "embedded:smollm2-135m"
CANCEL = "I need to cancel my order 70012345, it was a mistake"


def upstream(intent: str, p: float = 0.9, entities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "intent": {"output": {"label": intent}, "confidence": p, "answered_by": AnsweredBy.SPECIALIST},
        "entities": {"output": entities or {}, "confidence": 1.0, "answered_by": AnsweredBy.SPECIALIST},
    }


ITEMS = [
    KnowledgeItem(
        id="cancel-1",
        topic="cancel_order",
        reply="We have received your request to cancel order {{Order Number}}; it stops before it ships.",
        examples=("please cancel my order, I ordered by mistake",),
    ),
    KnowledgeItem(
        id="cancel-2",
        topic="cancel_order",
        reply="Orders can be cancelled under My Orders on {{Website Name}}.",
        examples=("where on the website do I find the button to cancel orders",),
    ),
    KnowledgeItem(id="refund-1", topic="get_refund", reply="Your refund request is with our billing team."),
]


def test_fill_names_what_it_filled_and_what_it_left() -> None:
    filled = fill(
        "Order {{Order Number}} on {{ website_name }} ({{Phone}})", {"order number": "7", "Website Name": "x.com"}
    )
    assert filled.text == "Order 7 on x.com ({{Phone}})"
    assert filled.filled == {"Order Number": "7", "website_name": "x.com"} and filled.unfilled == ["Phone"]


def test_knowledge_reads_jsonl_csv_and_markdown_folders(tmp_path: Path) -> None:
    jsonl = tmp_path / "k.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "topic": "t", "reply": "Hello", "examples": ["hi"]}) + "\n\n")
    assert load_knowledge(jsonl) == [
        KnowledgeItem(id="a", topic="t", reply="Hello", examples=("hi",), source=f"{jsonl}:1")
    ]
    table = tmp_path / "k.csv"
    table.write_text("id,topic,reply,example\nm1,refund,We refund in 5 days.,where is my refund\nm1,refund,,refund?\n")
    (item,) = load_knowledge(table)
    assert item.id == "m1" and item.examples == ("where is my refund", "refund?")
    folder = tmp_path / "articles"
    (folder / "get_refund").mkdir(parents=True)
    (folder / "get_refund" / "how.md").write_text("# How do I get a refund\n\nOpen Refunds and follow the steps.\n")
    (article,) = load_knowledge(folder)
    assert article.topic == "get_refund" and article.examples == ("How do I get a refund",)
    assert article.reply == "Open Refunds and follow the steps."


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("k.jsonl", '{"topic": "t"}\n', "needs a non-empty 'reply'"),
        ("k.jsonl", '{"reply": "x"}\n', "needs a 'topic'"),
        ("k.jsonl", "not json\n", "k.jsonl:1 is not JSON"),
        ("k.csv", "a,b\n1,2\n", "needs 'reply' and 'topic' columns"),
        ("k.txt", "x", "give a .jsonl or .csv file"),
        ("missing.jsonl", None, "does not exist"),
    ],
)
def test_unreadable_knowledge_says_what_to_fix(tmp_path: Path, name: str, content: str | None, says: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=says):
        load_knowledge(path)


def test_the_built_in_knowledge_answers_every_bitext_intent_with_no_foreign_numbers() -> None:
    items = load_knowledge(BUILT_IN)
    assert sorted(i.topic for i in items) == sorted(BITEXT_INTENTS)
    for item in items:
        assert set(item.placeholders) <= {"Order Number", "Invoice Number", "Account Type", "Customer Name"}
        assert not any(ch.isdigit() and item.reply.count(ch) > 2 for ch in "0123456789"), item.reply


@pytest.mark.embedded
async def test_a_draft_cites_the_item_it_used_and_fills_its_placeholders() -> None:
    router = build_router(Settings.load(env={}))
    drafter = ReplyDrafter(router, SMOL, facts={"Website Name": "shop.example"})
    drafter.use_knowledge(KnowledgeBase(ITEMS), Embedder(router, SMOL))
    result = await drafter.run(
        ReplyInput(text=CANCEL, upstream=upstream("cancel_order", 0.9, {"order_id": "70012345"}))
    )
    assert result.ok and result.output is not None
    assert result.output.knowledge == ["cancel-1"]
    assert result.output.reply == "We have received your request to cancel order 70012345; it stops before it ships."
    assert result.output.unfilled == [] and result.confidence == pytest.approx(0.9)
    # the same ticket with no order id in its entities: the placeholder stays and the confidence halves
    unfilled = await drafter.run(ReplyInput(text=CANCEL, upstream=upstream("cancel_order", 0.9)))
    assert unfilled.output is not None and unfilled.output.unfilled == ["Order Number"]
    assert unfilled.confidence == pytest.approx(0.45)
    assert "left unfilled: Order Number" in unfilled.explain()


@pytest.mark.embedded
async def test_an_empty_knowledge_base_or_an_unknown_topic_makes_the_drafter_abstain() -> None:
    router = build_router(Settings.load(env={}))
    drafter = ReplyDrafter(router, SMOL)
    drafter.use_knowledge(KnowledgeBase([]), Embedder(router, SMOL))
    empty = await drafter.run(ReplyInput(text=CANCEL, upstream=upstream("cancel_order")))
    assert not empty.ok and empty.output is None and empty.confidence == 0.0
    drafter.use_knowledge(KnowledgeBase(ITEMS), Embedder(router, SMOL))
    unknown = await drafter.run(ReplyInput(text="my parcel is late", upstream=upstream("delivery_period")))
    assert (
        unknown.output is None and "nothing in the knowledge base answers intent delivery_period" in unknown.explain()
    )


def _scripted_shoal(db: Path, reply_threshold: float) -> tuple[Shoal, ScriptedBackend]:
    def answer(request: Any) -> str:
        schema = request.output_schema
        labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
        chosen = "cancel_order" if "cancel_order" in labels else (labels or ["?"])[0]
        return {
            "Label": json.dumps({"label": chosen}),
            "TicketEntities": '{"order_id": "70012345"}',
            "Summary": '{"summary": "The customer wants order 70012345 cancelled", "key_points": []}',
        }[schema.__name__]

    settings = Settings.load(env={"SHOAL_DB": str(db)})
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    settings.specialists["reply"] = SpecialistSettings(threshold=reply_threshold)
    settings.frontier_model = None
    backend = ScriptedBackend(answer)
    return Shoal(settings, router=ModelRouter(lambda _: backend)), backend


async def test_a_reply_a_person_wrote_in_review_is_drafted_for_the_next_such_ticket(tmp_path: Path) -> None:
    written = "Done: order 70012345 is cancelled and you will not be charged. Sorry for the trouble!"
    async with _scripted_shoal(tmp_path / "shoal.db", reply_threshold=1.0)[0] as shoal:
        (first,) = await shoal.triage([TicketRow(key="A", line=1, text=CANCEL)])
        assert first.status == TicketStatus.WAITING and first.escalated == ["reply"]
        report = await shoal.review(first.reviews[0], written, who="agent-7")
        assert report.status == "done"
        review = shoal.store.get_review(first.reviews[0])
        assert review is not None and review.status == ReviewStatus.ANSWERED
        (example,) = shoal.store.examples("reply")
        assert example.source == "human" and json.loads(example.label) == {"topic": "cancel_order", "reply": written}
    # another process, trusting replies now: the same ticket gets the reply the person wrote
    async with _scripted_shoal(tmp_path / "shoal.db", reply_threshold=0.0)[0] as shoal:
        (second,) = await shoal.triage([TicketRow(key="B", line=2, text=CANCEL)])
        assert second.status == TicketStatus.DONE, second
        reply = second.fields["reply"]["output"]
        assert reply["reply"] == written and reply["knowledge"] == [f"reviewed:{example.id}"]


@pytest.mark.embedded
async def test_a_reviewed_reply_is_retrievable_on_the_real_model(tmp_path: Path) -> None:
    """What review stores (an `example` row) is found by the drafter's real embeddings for the
    next ticket like it, over the built-in item for the same intent."""
    written = "Your order 70012345 is cancelled; nothing will be charged."
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    async with Shoal(settings) as shoal:
        label = json.dumps({"topic": "cancel_order", "reply": written})
        shoal.store.add_examples([{"specialist": "reply", "text": CANCEL, "label": label, "source": "human"}])
        drafter = shoal.ticket_specialists()["reply"]
        assert isinstance(drafter, ReplyDrafter)
        result = await drafter.run(
            ReplyInput(
                text="please cancel my order 70012345, I ordered it by mistake", upstream=upstream("cancel_order")
            )
        )
    assert result.output is not None and result.output.reply == written
    assert result.output.knowledge[0].startswith("reviewed:")

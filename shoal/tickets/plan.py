"""The ticket workflow: a known plan (so no planner call), its specialists, and routing.

Per ticket, in parallel: category and intent (classifiers), entities (extractor) and a
one-line summary (summarizer); priority once the intent is known (the team's rules go by
intent), and a first reply (`ReplyDrafter`) once intent and entities are (it is chosen by the
one and filled from the other); then a queue chosen by the routing rules in `[tickets]`.
Every step goes through its confidence gate and the escalation ladder like any other.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from shoal.config import Settings
from shoal.models import ModelRouter
from shoal.specialists import Classifier, Extractor, Specialist, Summarizer
from shoal.tickets.priority import PriorityClassifier
from shoal.tickets.reply import ReplyDrafter

TICKET_PLAN: dict[str, Any] = {
    "steps": [
        {"id": "category", "specialist": "category", "instruction": "the ticket's category", "inputs": ["task"]},
        {"id": "intent", "specialist": "intent", "instruction": "what the customer wants", "inputs": ["task"]},
        # the team's priority rules go by intent
        {"id": "priority", "specialist": "priority", "instruction": "how urgent it is", "inputs": ["task", "intent"]},
        {"id": "entities", "specialist": "entities", "instruction": "ids, names, amounts", "inputs": ["task"]},
        {"id": "summary", "specialist": "summary", "instruction": "one line for the agent", "inputs": ["task"]},
        # a reply is chosen by the ticket's intent and filled from its entities, so it waits for both
        {
            "id": "reply",
            "specialist": "reply",
            "instruction": "first reply to the customer",
            "inputs": ["task", "intent", "entities"],
        },
    ]
}
FIELDS = [step["id"] for step in TICKET_PLAN["steps"]]


def entity_model(fields: dict[str, str]) -> type[BaseModel]:
    """The configured entity fields as an all-optional pydantic model."""
    spec: dict[str, Any] = {
        name: (str | None, Field(default=None, description=about, max_length=80)) for name, about in fields.items()
    }
    model: type[BaseModel] = create_model("TicketEntities", **spec)
    return model


def ticket_specialists(router: ModelRouter, settings: Settings) -> dict[str, Specialist[Any, Any]]:
    t = settings.tickets

    def model(name: str) -> Any:
        return settings.model_for(name)

    def threshold(name: str, default: float) -> float:
        return settings.threshold_for(name, default)

    return {
        "category": Classifier(
            router,
            model("category"),
            t.categories,
            instruction="Classify the customer support ticket by category.",
            threshold=threshold("category", Classifier.default_threshold),
            name="category",
        ),
        "intent": Classifier(
            router,
            model("intent"),
            t.intents,
            instruction="Classify what the customer wants (the intent of the ticket).",
            threshold=threshold("intent", Classifier.default_threshold),
            name="intent",
        ),
        "priority": PriorityClassifier(
            router,
            model("priority"),
            t.priorities,
            instruction="Classify how urgently the ticket needs an answer.",
            threshold=threshold("priority", Classifier.default_threshold),
            name="priority",
            rules=t.priority_by_intent,
            topic_step=t.knowledge.topic_step,
        ),
        "entities": Extractor(
            router,
            model("entities"),
            entity_model(t.entities),
            instruction="Extract the details the customer gives in the ticket.",
            threshold=threshold("entities", Extractor.default_threshold),
            name="entities",
        ),
        "summary": Summarizer(
            router,
            model("summary"),
            min_words=3,
            max_words=25,
            instruction="Summarise the support ticket in one line for the agent who will handle it.",
            verbatim=True,
            threshold=threshold("summary", Summarizer.default_threshold),
            name="summary",
        ),
        "reply": ReplyDrafter(
            router,
            model("reply"),
            company=t.company,
            facts=t.knowledge.facts,
            placeholders=t.knowledge.placeholders,
            topic_step=t.knowledge.topic_step,
            threshold=threshold("reply", ReplyDrafter.default_threshold),
        ),
    }


def route(settings: Settings, fields: dict[str, Any]) -> str:
    """The queue for a triaged ticket: the first rule whose conditions all match."""
    labels = {
        name: (fields.get(name) or {}).get("label") if isinstance(fields.get(name), dict) else None
        for name in ("category", "intent", "priority")
    }
    for rule in settings.tickets.routes:
        conditions = {"category": rule.category, "intent": rule.intent, "priority": rule.priority}
        given = {k: v for k, v in conditions.items() if v}
        if given and all(labels[k] in v for k, v in given.items()):
            return rule.queue
    return settings.tickets.default_queue

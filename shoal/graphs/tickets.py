"""The support-ticket workflow: a known plan, so no planner call.

Per ticket, all in parallel: category, intent and priority (classifiers), entities
(extractor), a one-line summary (summarizer) and a first reply (a custom specialist); then a
queue chosen by the routing rules in config. Every step goes
through its confidence gate and the escalation ladder like any other.

`ReplyDrafter` is a custom specialist written only on the public `Specialist` API: it is also
the worked example of adding your own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, create_model

from shoal.config import Settings
from shoal.models import Message, ModelRouter, Reply
from shoal.specialists import Classifier, Extractor, Judgement, Signal, Specialist, Summarizer, TextInput
from shoal.specialists.grounding import numbers

# --- the custom specialist -------------------------------------------------------------------


class ReplyDraft(BaseModel):
    reply: str = Field(max_length=240, description="the first reply to send the customer")


class ReplyDrafter(Specialist[TextInput, ReplyDraft]):
    """Drafts a first reply. Confidence: the draft invents no numbers (ids, amounts, dates the
    ticket never had), leaves no template placeholders, and has a sensible length."""

    name: ClassVar[str] = "reply"
    input_type = TextInput
    output_type = ReplyDraft
    default_threshold: ClassVar[float] = 0.6

    def __init__(self, router: Any, model: Any, *, company: str = "our company", **kwargs: Any) -> None:
        kwargs.setdefault("max_tokens", 120)
        super().__init__(router, model, **kwargs)
        self.company = company

    def response_type(self) -> type[BaseModel]:
        return ReplyDraft

    def wants_logprobs(self) -> bool:
        return False

    def messages(self, data: TextInput) -> list[Message]:
        system = (
            f"You answer customer support tickets for {self.company}. Write a short, polite first reply "
            "(one to three sentences) that acknowledges the request and says what happens next. Do not "
            'promise refunds or dates, and do not invent order numbers. Answer with JSON: {"reply": "..."}.'
        )
        return [Message(role="system", content=system), Message(role="user", content=data.text)]

    async def judge(self, data: TextInput, reply: Reply) -> Judgement[ReplyDraft]:
        draft = reply.parsed
        assert isinstance(draft, ReplyDraft)
        source_numbers = set(numbers(data.text))
        invented = [n for n in numbers(draft.reply) if n not in source_numbers]
        placeholders = re.findall(r"\{\{[^}]*\}\}|\[[A-Z][A-Za-z ]+\]|<[a-z_ ]+>", draft.reply)
        words = len(draft.reply.split())
        sized = 5 <= words <= 80
        confidence = (0.0 if invented else 1.0) * (0.3 if placeholders else 1.0) * (1.0 if sized else 0.4)
        return Judgement(
            output=draft,
            confidence=confidence,
            evidence=[
                Signal(
                    name="no_invented_numbers",
                    value=0.0 if invented else 1.0,
                    detail=f"not in the ticket: {', '.join(invented)}" if invented else "every number is the ticket's",
                ),
                Signal(
                    name="no_placeholders",
                    value=0.3 if placeholders else 1.0,
                    detail=f"left in: {', '.join(placeholders[:3])}" if placeholders else "none",
                ),
                Signal(name="length", value=1.0 if sized else 0.4, detail=f"{words} words (5-80)"),
            ],
        )


# --- the workflow ---------------------------------------------------------------------------

TICKET_PLAN: dict[str, Any] = {
    "steps": [
        {"id": "category", "specialist": "category", "instruction": "the ticket's category", "inputs": ["task"]},
        {"id": "intent", "specialist": "intent", "instruction": "what the customer wants", "inputs": ["task"]},
        {"id": "priority", "specialist": "priority", "instruction": "how urgent it is", "inputs": ["task"]},
        {"id": "entities", "specialist": "entities", "instruction": "ids, names, amounts", "inputs": ["task"]},
        {"id": "summary", "specialist": "summary", "instruction": "one line for the agent", "inputs": ["task"]},
        # from the ticket alone, so all six fields run side by side and a doubtful category
        # does not hold the draft back
        {"id": "reply", "specialist": "reply", "instruction": "first reply to the customer", "inputs": ["task"]},
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
        "priority": Classifier(
            router,
            model("priority"),
            t.priorities,
            instruction="Classify how urgently the ticket needs an answer.",
            threshold=threshold("priority", Classifier.default_threshold),
            name="priority",
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
            threshold=threshold("summary", Summarizer.default_threshold),
            name="summary",
        ),
        "reply": ReplyDrafter(
            router, model("reply"), company=t.company, threshold=threshold("reply", ReplyDrafter.default_threshold)
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


# --- reading a ticket export ----------------------------------------------------------------


class TicketRow(BaseModel):
    key: str
    line: int
    text: str


class BadRow(BaseModel):
    key: str
    line: int
    reason: str


Format = Literal["csv", "jsonl"]


def ticket_source(path: Path) -> str:
    """What identifies an export: its absolute path, so two files named tickets.csv in two
    folders are two sources (ids are unique within a source, not across them)."""
    return str(path.expanduser().resolve())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_tickets(
    path: Path,
    *,
    text_column: str = "instruction",
    id_column: str | None = None,
    max_chars: int = 20_000,
) -> Iterator[TicketRow | BadRow]:
    """Rows of a CSV or JSONL export; a row that cannot be a ticket comes back as a BadRow
    with its reason, and reading goes on."""
    if not path.is_file():
        raise FileNotFoundError(f"no ticket file at {path}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ValueError(f"{path}: give a .csv or .jsonl file")
    stem = path.stem
    seen: dict[str, int] = {}  # id -> line it was first seen on

    def check(key: str, line: int, text: Any) -> TicketRow | BadRow:
        first = seen.setdefault(key, line)
        if first != line:
            # its own key, so the rejection does not overwrite the ticket that owns the id
            return BadRow(key=f"{key}#line{line}", line=line, reason=f"duplicate id '{key}' (first on line {first})")
        if text is None:
            return BadRow(key=key, line=line, reason=f"no '{text_column}' value")
        if not isinstance(text, str):
            return BadRow(key=key, line=line, reason=f"'{text_column}' is not text")
        if any("\udc80" <= ch <= "\udcff" for ch in text):
            return BadRow(key=key, line=line, reason="the text is not valid UTF-8")
        if "\x00" in text:
            return BadRow(key=key, line=line, reason="the text contains NUL bytes (binary data)")
        if not text.strip():
            return BadRow(key=key, line=line, reason="the text is empty")
        if len(text) > max_chars:
            return BadRow(
                key=key, line=line, reason=f"the text is {len(text):,} characters, over the limit of {max_chars:,}"
            )
        return TicketRow(key=key, line=line, text=text)

    if suffix == ".csv":
        # bodies above the limit are rejected one by one below, not by the csv module mid-file
        csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if text_column not in columns:
                raise ValueError(
                    f"{path} has no column '{text_column}'; its columns: {columns}. Choose one with --text"
                )
            if id_column and id_column not in columns:
                raise ValueError(f"{path} has no column '{id_column}'; its columns: {columns}. Choose one with --id")
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:  # a broken line must not end the batch
                    yield BadRow(key=f"{stem}:{reader.line_num}", line=reader.line_num, reason=f"unreadable CSV: {exc}")
                    continue
                number = reader.line_num
                key = (record.get(id_column) or "").strip() if id_column else ""
                yield check(key or f"{stem}:{number}", number, record.get(text_column))
        return
    with path.open("rb") as binary:
        for number, raw in enumerate(binary, start=1):
            if not raw.strip():
                continue
            line = raw.decode("utf-8", errors="surrogateescape")
            try:
                record = json.loads(line)
            except ValueError as exc:
                yield BadRow(key=f"{stem}:{number}", line=number, reason=f"not JSON: {exc}")
                continue
            if not isinstance(record, dict):
                yield BadRow(key=f"{stem}:{number}", line=number, reason="not a JSON object")
                continue
            key = str(record.get(id_column) or "").strip() if id_column else ""
            yield check(key or f"{stem}:{number}", number, record.get(text_column))

"""The API's request and response bodies; FastAPI validates requests against them (a body that
does not fit is a 422 naming the field) and builds the OpenAPI document at /docs from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, description="your ticket id: submitting it again is a no-op")
    text: str = Field(min_length=1, description="the customer's message")


class TicketBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tickets: list[TicketIn] = Field(min_length=1, description="tickets to triage, each with its own id")


def _shape(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "tickets" in value else "one"


# one ticket, or {"tickets": [...]}; told apart by the key, so a bad body gets the errors of
# the shape it meant, not of both
Submission = Annotated[
    Annotated[TicketIn, Tag("one")] | Annotated[TicketBatch, Tag("batch")],
    Discriminator(_shape),
]
SHAPE_TAGS = ("one", "batch")


class TicketOut(BaseModel):
    id: str = Field(description="your ticket id")
    status: str = Field(description="pending, running, done, waiting (for a person), failed")
    created: bool = Field(default=False, description="true when this request submitted it; false for a repeat")
    conflict: bool = Field(default=False, description="the id was submitted before with another text (kept)")
    queue: str | None = None
    run_id: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict, description="each field's output, confidence, who answered")
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TicketsOut(BaseModel):
    tickets: list[TicketOut]


class ReviewAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str | dict[str, Any] | None = Field(
        default=None,
        description="the specialist's output as JSON, a label (classifiers), or plain text (one-text outputs)",
    )
    accept: bool = Field(default=False, description="accept the models' best answer instead of giving one")
    who: str | None = Field(default=None, max_length=200, description="who answered (default: the token's name)")


class ErrorBody(BaseModel):
    error: str = Field(description="a stable code: unauthorized, forbidden, not_found, too_large, invalid, ...")
    message: str
    fields: list[dict[str, str]] | None = Field(default=None, description="for invalid: each field and what is wrong")
    error_id: str | None = Field(default=None, description="for internal: quote it, the server log has the trace")

"""The `[tickets]` section: the taxonomy, the entity fields, the routing rules and the limits of
the support-ticket workflow. The shipped taxonomy is Bitext's (data/bitext_customer_support.csv).

Kept free of shoal's other modules: `shoal.config` reads this section, and everything reads config.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


BITEXT_CATEGORIES = [
    "ACCOUNT",
    "CANCELLATION_FEE",
    "CONTACT",
    "DELIVERY",
    "FEEDBACK",
    "INVOICE",
    "NEWSLETTER",
    "ORDER",
    "PAYMENT",
    "REFUND",
    "SHIPPING_ADDRESS",
]


BITEXT_INTENTS = [
    "cancel_order", "change_order", "change_shipping_address", "check_cancellation_fee", "check_invoice",
    "check_payment_methods", "check_refund_policy", "complaint", "contact_customer_service",
    "contact_human_agent", "create_account", "delete_account", "delivery_options", "delivery_period",
    "edit_account", "get_invoice", "get_refund", "newsletter_subscription", "payment_issue", "place_order",
    "recover_password", "registration_problems", "review", "set_up_shipping_address", "switch_account",
    "track_order", "track_refund",
]  # fmt: skip

PRIORITIES = {
    "low": "a question or feedback with no deadline",
    "normal": "a request to act on an order, account or payment",
    "high": "money lost, an order wrong or late, a customer upset",
    "urgent": "fraud, a security problem, legal threats, or a customer about to leave",
}

ENTITY_FIELDS = {
    "order_id": "the order or purchase number",
    "invoice_id": "the invoice or bill number",
    "account_type": "the kind of account (e.g. premium, free, business)",
    "person_name": "the customer's name",
    "email": "an email address",
    "amount": "a money amount with its currency",
    "product": "the product the ticket is about",
    "delivery_city": "a city to deliver to",
}


class Route(_Section):
    """Send a ticket to `queue` when every condition given matches (first matching rule wins)."""

    queue: str
    category: list[str] = Field(default_factory=list)
    intent: list[str] = Field(default_factory=list)
    priority: list[str] = Field(default_factory=list)


DEFAULT_ROUTES = [
    Route(queue="urgent", priority=["urgent"]),
    Route(queue="billing", category=["PAYMENT", "INVOICE", "REFUND", "CANCELLATION_FEE"]),
    Route(queue="orders", category=["ORDER", "DELIVERY", "SHIPPING_ADDRESS"]),
    Route(queue="accounts", category=["ACCOUNT", "NEWSLETTER"]),
]


class KnowledgeSettings(_Section):
    """`[tickets.knowledge]`: what replies are drafted from (see `shoal.tickets.knowledge`)."""

    path: Path | None = Field(
        default=None, description="a .jsonl or .csv file or a folder of .md files; relative to shoal.toml"
    )
    topic_step: str = Field(default="intent", description="the ticket field whose label picks the items")
    # company facts that fill placeholders: "Customer Support Phone Number" = "+1 555 0100"
    facts: dict[str, str] = Field(default_factory=dict)
    # placeholder -> entity field whose value fills it
    placeholders: dict[str, str] = Field(
        default_factory=lambda: {
            "Order Number": "order_id",
            "Invoice Number": "invoice_id",
            "Account Type": "account_type",
            "Customer Name": "person_name",
            "Email": "email",
        }
    )


class TicketSettings(_Section):
    """The support-ticket workflow (`shoal triage`); the shipped taxonomy is Bitext's."""

    categories: list[str] = Field(default_factory=lambda: list(BITEXT_CATEGORIES), min_length=2)
    intents: list[str] = Field(default_factory=lambda: list(BITEXT_INTENTS), min_length=2)
    priorities: dict[str, str] = Field(default_factory=lambda: dict(PRIORITIES), min_length=2)
    entities: dict[str, str] = Field(default_factory=lambda: dict(ENTITY_FIELDS), min_length=1)
    routes: list[Route] = Field(default_factory=lambda: list(DEFAULT_ROUTES))
    default_queue: str = "general"
    review_queue: str = "needs-review"
    max_chars: int = Field(default=20_000, ge=1, description="longer ticket bodies are rejected, not cut")
    company: str = Field(default="our company", description="who the drafted replies speak for")
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    # intent -> priority: the team's rules come before any model (see shoal/tickets/priority.py)
    priority_by_intent: dict[str, str] = Field(default_factory=dict)
    outage_wait_s: float = Field(
        default=120.0,
        ge=0.0,
        description="when the model server is unreachable, a batch pauses and retries this long before a ticket fails",
    )

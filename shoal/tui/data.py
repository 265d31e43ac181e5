"""How the screens word what the engine's views give them: plain text from typed rows, so the
screens stay thin and this stays testable without Textual. Nothing here reads the store or
decides anything; the engine's views (`shoal.engine.views`, `shoal.engine.reviews`) do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shoal.status import RunStatus

if TYPE_CHECKING:
    from shoal.engine.reviews import ReviewDetail
    from shoal.engine.views import Evidence, Exchange

# the Runs screen's filter cycles through these (None: every run)
STATUSES: tuple[RunStatus | None, ...] = (
    None,
    RunStatus.RUNNING,
    RunStatus.WAITING,
    RunStatus.DONE,
    RunStatus.FAILED,
    RunStatus.STOPPED,
)

# accepting an answer the models were less sure of than this asks once more: one key must not
# file a coin toss as a person's verdict (and teach it to the classifier as a labelled example)
CONFIRM_BELOW = 0.5


def one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def evidence_lines(evidence: Iterable[Evidence]) -> list[str]:
    return [f"{e.name} = {e.value:.2f}  {e.detail}".rstrip() for e in evidence]


def compact(value: Any) -> str:
    """An answer (JSON data) on one line; a classifier's shows its label alone."""
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        labels = value.get("labels")
        if not labels or labels == [value["label"]]:
            return str(value["label"])
    return json.dumps(value, ensure_ascii=False)


def needs_confirming(review: ReviewDetail) -> bool:
    """Whether accepting this review's best answer asks once more (see CONFIRM_BELOW)."""
    return review.best_answer is not None and review.confidence < CONFIRM_BELOW


def review_text(review: ReviewDetail) -> str:
    """A review as a person reads it: what `a` would accept first, then why it is here, then the
    input (the longest part, last, so a long ticket never pushes the answer off the screen)."""
    if review.best_answer is None:
        accept = "a: nothing to accept (the models gave no usable answer); type one below"
    else:
        low = f" (below {CONFIRM_BELOW:.2f}: a asks to confirm)" if needs_confirming(review) else ""
        accept = f"a accepts: {compact(review.best_answer)}   confidence {review.confidence:.2f}{low}"
    lines = [accept, f"{review.specialist} · step {review.step_id} · run {review.run_id} · review {review.id}"]
    best = None if review.best_answer is None else compact(review.best_answer)
    if review.small_answer is not None and compact(review.small_answer) != best:
        lines.append(f"small model's answer: {compact(review.small_answer)}")
    lines += ["", f"evidence ({review.small_model or 'no model'}):"]
    lines += [f"  {line}" for line in evidence_lines(review.evidence)] or ["  (none)"]
    lines += ["", "why it is here:", *[f"  {reason}" for reason in review.reasons]]
    if review.frontier is not None:
        lines.append(f"  frontier {review.frontier.model or ''}: {review.frontier.outcome} {review.frontier.reason}")
    lines += ["", f"answer with {review.expects}"]
    if review.instruction:
        lines += ["", f"instruction: {review.instruction}"]
    lines += ["", "input:", review.input_text]
    return "\n".join(lines)


def exchange_text(exchange: Exchange) -> tuple[str, str]:
    """A model call as (reply, prompt) text: the reply first, since it is short and a prompt can
    be thousands of lines long."""
    if exchange.error:
        reply = f"error: {exchange.error}" + (f"\nthe model said: {exchange.reply}" if exchange.reply else "")
    else:
        reply = pretty(exchange.reply or "")
    turns = [f"--- {turn.role} ---\n{turn.content}" for turn in exchange.turns]
    options = {k: v for k, v in exchange.options.items() if k != "output_schema"}
    schema = exchange.options.get("output_schema")
    if isinstance(schema, dict):
        options["output_schema"] = schema.get("title", "yes")
    settings = ", ".join(f"{k}={v}" for k, v in options.items())
    return reply, "\n".join([*turns, f"--- request ---\n{settings}"])


def pretty(text: str) -> str:
    """JSON text indented, anything else as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text

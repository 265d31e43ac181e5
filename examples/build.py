"""Build what `examples/` ships, from the repository's Bitext data (data/, CDLA-Sharing 1.0).

    uv run python examples/build.py                     # knowledge bases only (seconds)
    uv run python examples/build.py --heads             # and the category and intent heads (minutes)
    uv run python examples/build.py --heads --entities  # and the entities span head (ten minutes more)

Writes:

- `shoal/tickets/replies.jsonl`: the built-in knowledge base (one reply per Bitext intent, with
  only the placeholders the default settings fill from entities, and ten customer messages
  each), used when `[tickets.knowledge] path` is unset;
- `examples/knowledge/replies.jsonl`: the example knowledge base (up to five replies per intent,
  each with the customer message it answered), whose placeholders `examples/shoal.toml` fills;
- `examples/heads/category.npz`, `examples/heads/intent.npz`: trained heads on
  embedded:smollm2-135m, which `examples/shoal.toml` points at;
- `examples/heads/entities.npz`: the span head that reads ticket entities off the text (same model).

Nothing here is fitted on a row of `examples/tickets.csv` or on the held-out share of Bitext that
`benchmarks/tickets.py` measures on (`held_out`: 15% of rows, chosen by a hash of the text, so the
split never changes when the data is re-read).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bitext_customer_support.csv"
TICKETS = ROOT / "examples" / "tickets.csv"
BUILT_IN = ROOT / "shoal" / "tickets" / "replies.jsonl"
KNOWLEDGE = ROOT / "examples" / "knowledge" / "replies.jsonl"
HEADS = ROOT / "examples" / "heads"
EMBED_MODEL = "embedded:smollm2-135m"
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


def held_out(text: str) -> bool:
    """The benchmark's share of Bitext: 15% of rows by a hash of the customer's text."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 100 < 15


def bitext() -> list[dict[str, str]]:
    with DATA.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def training_rows() -> list[dict[str, str]]:
    """Rows that may be fitted on: not held out, and not one of the example tickets."""
    with TICKETS.open(encoding="utf-8", newline="") as handle:
        shown = {row["instruction"] for row in csv.DictReader(handle)}
    return [r for r in bitext() if not held_out(r["instruction"]) and r["instruction"] not in shown]


# an entity the customer gave, written into Bitext's reply, becomes the placeholder that
# `[tickets.knowledge.placeholders]` fills from the ticket's own entities
ENTITY_PLACEHOLDERS = {
    "order_id": "Order Number",
    "invoice_id": "Invoice Number",
    "account_type": "Account Type",
    "person_name": "Customer Name",
}


def template(row: dict[str, str]) -> str:
    """The row's reply with the customer's own values turned back into placeholders."""
    text = row["response"].strip()
    name = ENTITY_PLACEHOLDERS.get(row["entity_type"])
    if name and row["entity_value"]:
        value = re.escape(row["entity_value"])
        text = re.sub(rf"(?<![\w-]){value}(?![\w-])", "{{" + name + "}}", text)
    return text


def fillable(response: str, known: set[str]) -> bool:
    """Every placeholder known, and no number of three digits or more left: another customer's
    order number in a reply is worse than no reply."""
    return all(name in known for name in PLACEHOLDER.findall(response)) and not re.search(r"\d{3}", response)


def knowledge(rows: list[dict[str, str]], known: set[str], per_intent: int, examples: int) -> list[dict[str, object]]:
    """Per intent, the shortest replies whose placeholders are all `known` (under 1,500
    characters), each with the message it answered and, for one item per intent, more."""
    by_intent: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_intent[row["intent"]].append(row)
    items: list[dict[str, object]] = []
    for intent, group in sorted(by_intent.items()):
        usable = sorted(
            (r for r in group if fillable(template(r), known) and len(r["response"]) < 1500),
            key=lambda r: len(r["response"]),
        )
        if not usable:
            raise SystemExit(f"no reply for {intent} has only known placeholders: add facts to examples/shoal.toml")
        seen: set[str] = set()
        for row in usable[:per_intent]:
            reply = template(row)
            if reply in seen:
                continue
            seen.add(reply)
            others = [r["instruction"] for r in group if r is not row][: examples - 1]
            items.append(
                {
                    "id": f"bitext:{intent}:{len(seen)}",
                    "topic": intent,
                    "reply": reply,
                    "examples": [row["instruction"], *(others if per_intent == 1 else [])],
                }
            )
    return items


def write_jsonl(path: Path, items: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}: {len(items)} items")


def example_facts() -> set[str]:
    sys.path.insert(0, str(ROOT))
    from shoal.config import Settings

    settings = Settings.load(ROOT / "examples" / "shoal.toml", env={})
    chosen = settings.tickets.knowledge
    return set(chosen.facts) | set(chosen.placeholders) | {"Company Name"}


def spread(rows: list[dict[str, str]], label: str, per_label: int) -> list[dict[str, str]]:
    """Up to `per_label` rows of each label, evenly spaced through the label's rows. The data is
    sorted by intent, so a label's first rows are its first intent only (ORDER's first 60 are all
    `cancel_order`): a head fitted on them never sees "I want to place an order"."""
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row[label]].append(row)
    chosen = []
    for group in by_label.values():
        n = min(per_label, len(group))
        chosen.extend(group[i * len(group) // n] for i in range(n))
    return chosen


async def train_heads(rows: list[dict[str, str]], per_label: int) -> None:
    """Category and intent heads on `per_label` rows per label, exported as files."""
    from shoal.config import Settings
    from shoal.engine import Shoal
    from shoal.evaluation import Labelled

    HEADS.mkdir(parents=True, exist_ok=True)
    db = Path(tempfile.mkdtemp(prefix="shoal-build-")) / "shoal.db"
    settings = Settings.load(env={"SHOAL_DB": str(db)})
    settings.specialists = {}
    async with Shoal(settings) as shoal:
        for name in ("category", "intent"):
            chosen = [Labelled(text=row["instruction"], label=row[name]) for row in spread(rows, name, per_label)]
            report = await shoal.train(name, files=chosen, baseline=0, force=True)
            head = shoal.store.active_head(name)
            assert head is not None and head.blob is not None
            (HEADS / f"{name}.npz").write_bytes(head.blob)
            print(
                f"wrote examples/heads/{name}.npz: {report.n_train} examples, held-out accuracy "
                f"{report.after.accuracy:.3f}, ECE {report.after.ece:.3f}"
            )


async def train_entities(rows: list[dict[str, str]], *, without: int = 600, db: Path | None = None) -> None:
    """The entities span head on `examples/shoal.toml`'s entity fields: every row that shows an
    entity and `without` rows that show none, evenly spaced through them (reading a text's tokens
    takes ~0.2 s on a laptop core), then measured on the benchmark's held-out rows, which it was
    not fitted on.
    `db`: a database to keep token vectors in between builds (default: a fresh one)."""
    from shoal.config import Settings
    from shoal.engine import Shoal
    from shoal.span_training import measure_spans, span_labels
    from shoal.specialists.spans import spans_from_label

    HEADS.mkdir(parents=True, exist_ok=True)
    db = db or Path(tempfile.mkdtemp(prefix="shoal-build-")) / "shoal.db"
    settings = Settings.load(env={"SHOAL_DB": str(db)})
    settings.specialists = {}
    settings.tickets.entities = Settings.load(ROOT / "examples" / "shoal.toml", env={}).tickets.entities
    fields = list(settings.tickets.entities)
    unlabelled = [r for r in rows if not r["entity_type"]]  # sorted by intent: spread, or late intents go unseen
    n = min(without, len(unlabelled))
    chosen = [r for r in rows if r["entity_type"]] + [unlabelled[i * len(unlabelled) // n] for i in range(n)]
    async with Shoal(settings) as shoal:
        report = await shoal.train(
            "entities", files=span_labels(chosen, fields, text_column="instruction"), baseline=0, force=True
        )
        head = shoal.store.active_head("entities")
        assert head is not None and head.blob is not None
        (HEADS / "entities.npz").write_bytes(head.blob)
        print(
            f"wrote examples/heads/entities.npz: fields {', '.join(json.loads(head.labels_json))}; "
            f"{report.n_train} texts, {report.n_holdout} held out; all fields right on "
            f"{report.after.accuracy:.3f} of them, ECE {report.after.ece:.3f}"
        )
        with TICKETS.open(encoding="utf-8", newline="") as handle:
            shown = {row["instruction"] for row in csv.DictReader(handle)}
        benchmark = [r for r in bitext() if held_out(r["instruction"]) and r["instruction"] not in shown]
        labelled = span_labels(benchmark, fields, text_column="instruction")
        examples = [(r.text, spans) for r in labelled if (spans := spans_from_label(r.text, r.label)) is not None]
        extractor = shoal.learner("entities")
        reader = shoal.wiring.heads.token_reader("entities")
        tokens = await reader.read([t for t, _ in examples])
        spans_head = getattr(extractor, "span_head", None)
        assert spans_head is not None
        answers = [
            {f: (a.value, a.confidence) for f, a in spans_head.read(text, toks).items()}
            for (text, _), toks in zip(examples, tokens, strict=True)
        ]
        metrics, per_field = measure_spans("benchmark rows", extractor.threshold, examples, answers, spans_head.fields)
        print(
            f"benchmark held-out rows ({metrics.n}): all fields right {metrics.accuracy:.3f}, "
            f"ECE {metrics.ece:.3f}, AUROC {metrics.auroc}, escalated at {metrics.threshold} {metrics.escalated:.1%}"
        )
        for field, m in per_field.items():
            print(f"  {field}: {json.dumps(m)}")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", action="store_true", help="also train the category and intent heads")
    parser.add_argument("--entities", action="store_true", help="also train the entities span head")
    parser.add_argument("--per-label", type=int, default=120, help="training rows per label for the heads")
    parser.add_argument("--db", type=Path, help="keep token vectors in this database between builds")
    args = parser.parse_args()
    rows = training_rows()
    from shoal.tickets.settings import KnowledgeSettings

    defaults = set(KnowledgeSettings().placeholders) | {"Company Name"}  # what a config without facts fills
    write_jsonl(BUILT_IN, knowledge(rows, defaults, per_intent=1, examples=10))
    write_jsonl(KNOWLEDGE, knowledge(rows, example_facts(), per_intent=5, examples=1))
    if args.heads:
        asyncio.run(train_heads(rows, args.per_label))
    if args.entities:
        asyncio.run(train_entities(rows, db=args.db))


if __name__ == "__main__":
    main()

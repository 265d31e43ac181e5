"""The knowledge a reply is drafted from: approved replies, macros and help articles a team owns.

A reply a customer reads must come from something a person approved, not from what a small
model makes up. Each item is a reply template for one topic (on Bitext, an intent) with the
customer messages it answered as examples; `{{Placeholders}}` in it are filled from the ticket's
entities and the company's facts when it is used.

Where items come from (`[tickets.knowledge] path`):

- a JSONL file, one item per line: `{"id": ..., "topic": ..., "reply": ..., "examples": [...]}`;
- a CSV file with `id`, `topic`, `reply` and optionally `example` columns (rows sharing an id
  are one item with several examples);
- a folder of Markdown files, one item per file, the sub-folder naming its topic
  (`refunds/policy.md`); the file's first `# heading` is its example;
- and replies a person wrote or edited in review (the flywheel), kept in the store.

With no path, the built-in knowledge: one Bitext reply per Bitext intent (the default taxonomy),
with no placeholders but those the default settings fill from the ticket's entities.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from shoal.models.embeddings import Embedder

    Matrix = npt.NDArray[np.float32]

BUILT_IN = Path(__file__).with_name("replies.jsonl")  # Bitext's replies, one per intent (examples/build.py)
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
REVIEWED = "reviewed"  # the source of items a person wrote in review


@dataclass(frozen=True)
class KnowledgeItem:
    id: str
    topic: str
    reply: str
    examples: tuple[str, ...] = ()
    source: str = ""

    @property
    def placeholders(self) -> list[str]:
        return list(dict.fromkeys(PLACEHOLDER.findall(self.reply)))


@dataclass
class Filled:
    """A template with its placeholders filled where a value is known."""

    text: str
    filled: dict[str, str] = field(default_factory=dict)
    unfilled: list[str] = field(default_factory=list)


def fill(template: str, values: Mapping[str, str]) -> Filled:
    """`template` with each `{{Name}}` replaced by `values[Name]` (names compared ignoring case,
    spaces and underscores); unknown names are left in place and listed."""
    known = {_key(name): value for name, value in values.items() if value}
    filled: dict[str, str] = {}
    unfilled: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = known.get(_key(name))
        if value is None:
            if name not in unfilled:
                unfilled.append(name)
            return match.group(0)
        filled[name] = value
        return value

    return Filled(text=PLACEHOLDER.sub(replace, template), filled=filled, unfilled=unfilled)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


class KnowledgeBase:
    """Items by topic, and the nearest item of a topic to a ticket by embeddings."""

    def __init__(self, items: Iterable[KnowledgeItem], *, where: str = "") -> None:
        self.items = list(items)
        self.where = where
        self._by_topic: dict[str, list[KnowledgeItem]] = {}
        for item in self.items:
            self._by_topic.setdefault(item.topic, []).append(item)
        self._vectors: dict[str, tuple[list[KnowledgeItem], Matrix]] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def topics(self) -> list[str]:
        return sorted(self._by_topic)

    def for_topic(self, topic: str) -> list[KnowledgeItem]:
        return list(self._by_topic.get(topic, ()))

    def add(self, item: KnowledgeItem) -> None:
        """One more item (a reply approved in review), retrievable from now on."""
        self.items.append(item)
        self._by_topic.setdefault(item.topic, []).append(item)
        self._vectors.pop(item.topic, None)

    async def nearest(self, topic: str, text: str, embedder: Embedder) -> tuple[KnowledgeItem, float] | None:
        """The item of `topic` whose examples are most like `text`, with that cosine similarity;
        None when the topic has no item. One item needs no embedding at all."""
        items = self._by_topic.get(topic, [])
        if not items:
            return None
        if len(items) == 1:
            return items[0], 1.0
        owners, vectors = await self._topic_vectors(topic, embedder)
        import numpy as np

        query = await embedder.embed([text], remember=False)
        sims = _unit(vectors) @ _unit(query)[0]
        best = int(np.argmax(sims))
        return owners[best], float(sims[best])

    async def _topic_vectors(self, topic: str, embedder: Embedder) -> tuple[list[KnowledgeItem], Matrix]:
        if topic not in self._vectors:
            owners: list[KnowledgeItem] = []
            texts: list[str] = []
            for item in self._by_topic[topic]:
                for example in item.examples or (item.reply,):
                    owners.append(item)
                    texts.append(example)
            # kept in the store's vector cache: the knowledge base is embedded once per model
            self._vectors[topic] = (owners, await embedder.embed(texts))
        return self._vectors[topic]


def _unit(matrix: Matrix) -> Matrix:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


# --- reading ---------------------------------------------------------------------------------


def load_knowledge(path: Path) -> list[KnowledgeItem]:
    """Items from a JSONL or CSV file or a folder of Markdown files; a clear `ConfigError` for
    anything else, naming the file and what to fix."""
    if path.is_dir():
        return _markdown_items(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"[tickets.knowledge] path {path} does not exist: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[tickets.knowledge] path {path} cannot be read: {exc}") from None
    if path.suffix.lower() == ".jsonl":
        return _jsonl_items(path, text)
    if path.suffix.lower() == ".csv":
        return _csv_items(path, text)
    raise ConfigError(f"[tickets.knowledge] path {path}: give a .jsonl or .csv file or a folder of .md files")


def _item(where: str, data: Mapping[str, object], examples: Sequence[str]) -> KnowledgeItem:
    reply, topic = data.get("reply"), data.get("topic")
    if not isinstance(reply, str) or not reply.strip():
        raise ConfigError(f"{where}: an item needs a non-empty 'reply'")
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigError(f"{where}: an item needs a 'topic' (e.g. the intent it answers)")
    return KnowledgeItem(
        id=str(data.get("id") or where),
        topic=topic.strip(),
        reply=reply.strip(),
        examples=tuple(e.strip() for e in examples if e.strip()),
        source=where,
    )


def _jsonl_items(path: Path, text: str) -> list[KnowledgeItem]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} is not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: each line must be a JSON object")
        examples = data.get("examples") or []
        if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
            raise ConfigError(f"{where}: 'examples' must be a list of strings")
        items.append(_item(where, data, examples))
    return items


def _csv_items(path: Path, text: str) -> list[KnowledgeItem]:
    rows = list(csv.DictReader(text.splitlines()))
    if rows and not {"reply", "topic"} <= set(rows[0]):
        raise ConfigError(f"{path}: the CSV needs 'reply' and 'topic' columns (and optionally 'id', 'example')")
    grouped: dict[str, tuple[dict[str, str], list[str]]] = {}
    for number, row in enumerate(rows, 2):
        key = row.get("id") or f"{path.name}:{number}"
        _, examples = grouped.setdefault(key, ({**row, "id": key}, []))
        if row.get("example"):
            examples.append(row["example"])
    return [_item(f"{path}:{data['id']}", data, examples) for data, examples in grouped.values()]


def _markdown_items(folder: Path) -> list[KnowledgeItem]:
    items = []
    for file in sorted(folder.rglob("*.md")):
        if file.parent == folder:
            raise ConfigError(f"{file}: put each article in a folder named for its topic ({folder}/TOPIC/{file.name})")
        text = file.read_text(encoding="utf-8")
        heading = re.match(r"\s*#\s+(.+)", text)
        body = text[heading.end() :] if heading else text
        data = {"id": str(file.relative_to(folder)), "topic": file.parent.name, "reply": body}
        items.append(_item(str(file), data, [heading.group(1)] if heading else []))
    if not items:
        raise ConfigError(f"[tickets.knowledge] path {folder} holds no .md files")
    return items


def reviewed_item(text: str, label: str, example_id: int) -> KnowledgeItem | None:
    """The item a reply approved in review became (see `ReplyDrafter.labelled_example`)."""
    try:
        data = json.loads(label)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not data.get("topic") or not data.get("reply"):
        return None
    return KnowledgeItem(
        id=f"{REVIEWED}:{example_id}",
        topic=str(data["topic"]),
        reply=str(data["reply"]),
        examples=(text,),
        source=REVIEWED,
    )

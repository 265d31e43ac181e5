"""Long prompt texts kept once: a model call's stored request names them by hash.

Every call of a specialist sends the same system prompt and output schema, and every step of a
ticket the same ticket text: stored whole with each call they were most of what a ticket cost the
database (#16). `pack` swaps each long text of a request for `{"$prompt": hash}` and hands the
texts to the store's `prompt` table (one row per distinct text, never deleted by `shoal prune`:
they are shared); `unpack` puts them back when a face reads the call, so `shoal show --calls`,
the TUI and the API show the request as it was sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

# shorter texts cost less inline than a reference and a row
MIN_CHARS = 160
KEY = "$prompt"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def pack(request_json: str) -> tuple[str, dict[str, str]]:
    """A stored request with its long texts (message contents, the output schema) replaced by
    references, and the texts by hash. A request that is not a chat's JSON is kept as it is."""
    try:
        request = json.loads(request_json)
    except ValueError:
        return request_json, {}
    if not isinstance(request, dict):
        return request_json, {}
    parts: dict[str, str] = {}

    def ref(text: str) -> Any:
        if len(text) < MIN_CHARS:
            return text
        key = digest(text)
        parts[key] = text
        return {KEY: key}

    messages = request.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = ref(message["content"])
    schema = request.get("output_schema")
    if isinstance(schema, dict):
        text = json.dumps(schema, ensure_ascii=False, sort_keys=True)
        packed = ref(text)
        request["output_schema"] = schema if packed == text else packed
    if not parts:
        return request_json, {}
    return json.dumps(request, ensure_ascii=False), parts


def references(request_json: str) -> set[str]:
    """The hashes a stored request names (none for one stored whole)."""
    if KEY not in request_json:
        return set()
    found: set[str] = set()
    _walk(_loads(request_json), found.add)
    return found


def unpack(request_json: str, texts: dict[str, str]) -> str:
    """The request as it was sent: every reference replaced by its text (a text pruned by hand
    from the table stays a reference)."""
    if KEY not in request_json:
        return request_json
    request = _loads(request_json)
    if not isinstance(request, dict):
        return request_json
    for message in request.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, dict) and _is_ref(content):
            message["content"] = texts.get(content[KEY], content)
    schema = request.get("output_schema")
    if isinstance(schema, dict) and _is_ref(schema) and schema[KEY] in texts:
        request["output_schema"] = json.loads(texts[schema[KEY]])
    return json.dumps(request, ensure_ascii=False)


def unpack_all(requests: Iterable[str], lookup: Callable[[set[str]], dict[str, str]]) -> list[str]:
    """Several stored requests unpacked with one lookup of the texts they name."""
    stored = list(requests)
    wanted: set[str] = set()
    for request in stored:
        wanted |= references(request)
    texts = lookup(wanted) if wanted else {}
    return [unpack(request, texts) for request in stored]


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {KEY} and isinstance(value[KEY], str)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _walk(value: Any, found: Callable[[str], None]) -> None:
    if _is_ref(value):
        found(value[KEY])
    elif isinstance(value, dict):
        for item in value.values():
            _walk(item, found)
    elif isinstance(value, list):
        for item in value:
            _walk(item, found)

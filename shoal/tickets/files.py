"""Ticket exports in and results out: reading CSV/JSONL rows (a bad row is reported, never fatal)
and writing a batch's results as JSONL or CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from shoal.errors import InputFileError, TaskError
from shoal.inputs import check_text
from shoal.tickets.plan import FIELDS

if TYPE_CHECKING:
    from shoal.store.tables import Ticket


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
        raise InputFileError(f"ticket file {path} does not exist or is not a file: check the path", path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputFileError(f"ticket file {path} is neither .csv nor .jsonl: export your tickets as one", path)
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
        try:
            check_text(text, max_chars, what="text")
        except TaskError as exc:
            return BadRow(key=key, line=line, reason=str(exc))
        return TicketRow(key=key, line=line, text=text)

    if suffix == ".csv":
        # bodies above the limit are rejected one by one below, not by the csv module mid-file
        csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if text_column not in columns:
                raise InputFileError(
                    f"{path} has no column '{text_column}'; its columns: {columns}. Choose one with --text", path
                )
            if id_column and id_column not in columns:
                raise InputFileError(
                    f"{path} has no column '{id_column}'; its columns: {columns}. Choose one with --id", path
                )
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


def result_record(row: Ticket) -> dict[str, Any]:
    """A triaged ticket as one flat record: per field its value (a label, the summary or reply
    text, or the extracted entities), confidence, who answered and how the step ended."""
    fields = json.loads(row.result_json) if row.result_json else {}
    record: dict[str, Any] = {"id": row.key, "line": row.line, "status": str(row.status), "queue": row.queue}
    for name in FIELDS:
        field = fields.get(name) or {}
        output = field.get("output")
        if isinstance(output, dict) and "label" in output:
            value: Any = output["label"]
        elif isinstance(output, dict) and "summary" in output:
            value = output["summary"]
        elif isinstance(output, dict) and "reply" in output:
            value = output["reply"]
        else:
            value = output
        record[name] = value
        record[f"{name}_confidence"] = field.get("confidence")
        record[f"{name}_by"] = field.get("answered_by")
        record[f"{name}_status"] = field.get("status")
    record["run_id"] = row.run_id
    record["error"] = row.error
    return record


def write_results(rows: Iterable[Ticket], out: Path) -> int:
    """Write triaged tickets to `out` as JSONL, or CSV (nested values as JSON text), by its
    suffix; returns how many. Written beside it first and then renamed over it, so `out` is
    never a half-written file, even when the batch is interrupted."""
    records = [result_record(row) for row in rows]
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        if out.suffix.lower() == ".jsonl":
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            flat = [{k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()} for r in records]
            writer = csv.DictWriter(handle, fieldnames=list(flat[0]) if flat else ["id"])
            writer.writeheader()
            writer.writerows(flat)
    tmp.replace(out)
    return len(records)

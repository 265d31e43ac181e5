"""What can be a task or a ticket, checked before anything is written or any model is asked.

One check for both: a task given to `shoal run` and a ticket row read from an export fail for the
same reasons, with the same words (the ticket reader turns the error into a bad row).
"""

from __future__ import annotations

from shoal.errors import TaskError


def check_text(text: str | bytes, limit: int, *, what: str = "task", raise_hint: str = "") -> str:
    """The text as `str`, or TaskError saying why it cannot be one (`what`: "task", "text")."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskError(f"the {what} is not UTF-8 text (byte {exc.start} is {text[exc.start]:#04x})") from None
    if any("\udc80" <= ch <= "\udcff" for ch in text):  # bytes a reader kept with surrogateescape
        raise TaskError(f"the {what} is not valid UTF-8")
    if "\x00" in text:
        raise TaskError(f"the {what} contains NUL bytes (binary data, not text)")
    if not text.strip():
        raise TaskError(f"the {what} is empty")
    if len(text) > limit:
        hint = f"; {raise_hint}" if raise_hint else ""
        raise TaskError(f"the {what} is {len(text):,} characters, over the limit of {limit:,}{hint}")
    return text

"""Privacy at the frontier boundary: personal data out of what leaves the machine, back in the answer.

Before a prompt goes to the frontier (a paid API run by someone else), emails, phone numbers,
payment card numbers (Luhn-checked), IBANs (mod-97-checked) and the `[privacy] patterns` a
shoal.toml names are replaced by placeholders such as `[EMAIL_1]`; the frontier answers with the
placeholders and `Redaction.restore` puts the original values back, so the answer is whole while
the frontier never saw them. What is recorded of a redaction is how many values of each kind
were replaced (`Redaction.counts`), never the values.

Detectors err on the side of what is plainly personal: a bare run of digits such as the order
id `70012345` is not a phone number (a phone needs a `+`, parentheses or separators in a phone's
shape); a card number must start with a card network's issuer prefix and pass the Luhn check,
and an IBAN its mod-97 check, so most long numbers (order ids, tracking numbers) go through
untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Kind = Literal["email", "phone", "card", "iban"]
BUILTIN_KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban")

# what a frontier is told when its prompt holds placeholders (so it copies them, not guesses)
PLACEHOLDER_NOTE = (
    "Values written like [EMAIL_1] stand for private data that was withheld: where such a value "
    "belongs in your answer, copy its placeholder exactly."
)


class PrivacySettings(BaseModel):
    """The `[privacy]` section: what is withheld from the frontier."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    kinds: list[Kind] = Field(default_factory=lambda: list(BUILTIN_KINDS))
    # name -> regular expression; each match is withheld as [NAME_n] (e.g. customer numbers)
    patterns: dict[str, str] = Field(default_factory=dict)

    @field_validator("patterns")
    @classmethod
    def _usable_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"pattern name {name!r}: use lowercase letters, digits and _ (e.g. customer_id)")
            if name in BUILTIN_KINDS:
                raise ValueError(f"pattern name {name!r} is a built-in kind: name it otherwise")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {name!r} is not a regular expression: {exc}") from None
            if compiled.fullmatch(""):
                raise ValueError(f"pattern {name!r} matches the empty text: it would withhold nothing but noise")
        return value


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces already taken out)."""
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", iban):
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)
# 13 to 19 digits, optionally in groups split by single spaces or dashes
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w-]|[ -]\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
# Phone shapes; never a bare run of digits (an order id): a leading +, an area code in
# parentheses, or groups split by separators in a phone's proportions.
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}"  # +44 20 7946 0958, +4915112345678
    r"|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,5}"  # (555) 123-4567
    r"|\d{2,5}[ .-]\d{3,4}[ .-]\d{4}"  # 555-123-4567, 020 7946 0958
    r"|0\d(?:[ .]\d{2}){4}"  # 01 23 45 67 89
    r"|0\d{2,4}[ /-]\d{5,8}"  # 030 12345678, 0151/12345678
    r")(?![\w-]|[ .-]\d)"
)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# Issuer prefixes of the card networks (Visa 4; Mastercard 51-55 and 2221-2720; Amex, Diners,
# JCB 3; Discover, UnionPay, Maestro 5-6). One random long number in ten passes Luhn, so an
# order id would often be taken for a card without this; with it, far fewer are.
_ISSUER = re.compile(r"[3-6]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720")


def _card(match: re.Match[str]) -> str | None:
    digits = _digits(match.group())
    ok = 13 <= len(digits) <= 19 and _ISSUER.match(digits) is not None and luhn_ok(digits)
    return match.group() if ok else None


def _iban(match: re.Match[str]) -> str | None:
    # the pattern may run into a following word in capitals: try the longest valid prefix
    text = match.group()
    ends = [m.end() for m in re.finditer(r"[A-Z0-9]+", text)]
    for end in reversed(ends):
        if iban_ok(text[:end].replace(" ", "")):
            return text[:end]
    return None


def _phone(match: re.Match[str]) -> str | None:
    return match.group() if 7 <= len(_digits(match.group())) <= 15 else None


Check = Callable[[re.Match[str]], str | None]


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    check: Check | None = None  # what of the match is the value (None: not one after all)


BUILTIN: dict[str, Detector] = {
    "email": Detector("email", _EMAIL),
    "iban": Detector("iban", _IBAN, _iban),
    "card": Detector("card", _CARD, _card),
    "phone": Detector("phone", _PHONE, _phone),
}


class Redactor:
    """Which kinds of value are withheld; `session()` starts one redaction (one frontier call)."""

    def __init__(self, kinds: Iterable[str] = BUILTIN_KINDS, patterns: dict[str, str] | None = None) -> None:
        chosen = set(kinds)
        unknown = chosen - set(BUILTIN)
        if unknown:
            raise ValueError(f"unknown kinds to redact: {', '.join(sorted(unknown))}")
        # configured patterns first (the operator's definition wins), then the built-ins in an
        # order where a longer, checked value is taken before a looser shape inside it
        self.detectors: list[Detector] = [Detector(n, re.compile(p)) for n, p in (patterns or {}).items()]
        self.detectors += [BUILTIN[k] for k in ("email", "iban", "card", "phone") if k in chosen]

    @classmethod
    def from_settings(cls, settings: PrivacySettings) -> Redactor | None:
        """The redactor `[privacy]` asks for, or None when it is off."""
        if not settings.enabled or not (settings.kinds or settings.patterns):
            return None
        return cls(settings.kinds, settings.patterns)

    def session(self) -> Redaction:
        return Redaction(self)

    def redact(self, text: str) -> tuple[str, dict[str, str], dict[str, int]]:
        """One text redacted: (text with placeholders, placeholder -> original, count per kind)."""
        redaction = self.session()
        (redacted,) = redaction.redact_all([text])
        return redacted, dict(redaction.originals), redaction.counts


class Redaction:
    """Placeholders given within one frontier call: the same value gets the same placeholder in
    every message, and `restore` puts the values back into whatever the frontier answered."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.originals: dict[str, str] = {}  # placeholder -> value
        self._placeholders: dict[tuple[str, str], str] = {}  # (kind, value) -> placeholder
        self._numbers: dict[str, int] = {}
        self._seen: list[str] = []  # the original texts: a placeholder never collides with them
        self._restore: re.Pattern[str] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """How many distinct values of each kind were withheld (never the values)."""
        out: dict[str, int] = {}
        for kind, _ in self._placeholders:
            out[kind] = out.get(kind, 0) + 1
        return out

    def redact_all(self, texts: list[str]) -> list[str]:
        self._seen.extend(texts)
        return [self._redact(text) for text in texts]

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self._placeholders:
            while True:
                n = self._numbers[kind] = self._numbers.get(kind, 0) + 1
                placeholder = f"[{kind.upper()}_{n}]"
                if not any(placeholder in text for text in self._seen):
                    break
            self._placeholders[key] = placeholder
            self.originals[placeholder] = value
            self._restore = None
        return self._placeholders[key]

    def _redact(self, text: str) -> str:
        for detector in self.redactor.detectors:
            text = self._apply(detector, text)
        return text

    def _apply(self, detector: Detector, text: str) -> str:
        parts: list[str] = []
        last = 0
        for match in detector.pattern.finditer(text):
            value = match.group() if detector.check is None else detector.check(match)
            if not value or _inside_placeholder(text, match.start()):
                continue
            start = match.start()
            parts.append(text[last:start])
            parts.append(self._placeholder(detector.kind, value))
            last = start + len(value)
        parts.append(text[last:])
        return "".join(parts)

    def restore(self, value: Any) -> Any:
        """`value` with every placeholder given out here replaced by its original: strings, and
        the strings inside dicts, lists and tuples (a JSON-like answer), keys included."""
        if not self.originals:
            return value
        if isinstance(value, str):
            return self.restore_text(value)
        if isinstance(value, dict):
            return {self.restore(k): self.restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.restore(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.restore(v) for v in value)
        return value

    def restore_text(self, text: str) -> str:
        if not self.originals or "[" not in text:
            return text
        if self._restore is None:
            names = sorted(self.originals, key=len, reverse=True)
            self._restore = re.compile("|".join(re.escape(p) for p in names), re.IGNORECASE)
        upper = {p.upper(): v for p, v in self.originals.items()}
        return self._restore.sub(lambda m: upper[m.group().upper()], text)

    def restore_model(self, model: BaseModel) -> BaseModel:
        """A pydantic answer with its values restored, validated again as its own type."""
        restored = self.restore(model.model_dump(mode="json"))
        return type(model).model_validate(restored)


def _inside_placeholder(text: str, start: int) -> bool:
    """Whether `start` falls inside a placeholder an earlier detector wrote (e.g. the 1 of [CARD_1])."""
    opening = text.rfind("[", 0, start + 1)
    if opening < 0:
        return False
    closing = text.find("]", opening)
    return closing >= start and re.fullmatch(r"\[[A-Z][A-Z0-9_]*_\d+\]", text[opening : closing + 1]) is not None

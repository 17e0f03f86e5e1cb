"""PII and secrets redaction of span attributes, event attributes and message content.

Two kinds of rules:

* key rules: attributes whose key matches ``PII_DROP_KEYS`` are removed; those matching
  ``PII_HASH_KEYS`` have their whole value replaced by a keyed hash (``[HASH:<16 hex>]``).
  Keys may use ``*`` wildcards (``gen_ai.prompt.*``).
* value detectors, applied to every string (including JSON-encoded message arrays, which are
  scanned as text, so what they contain is found without parsing them): each match is masked
  (``[REDACTED:email]``), hashed (``[email:<16 hex>]``) or removed, per ``PII_STRATEGY``.

Speed: Python's regex engine costs tens of microseconds per kilobyte of prompt, too slow to run
on every attribute of every span. Each detector therefore also has a *trigger*, a looser pattern
without look-arounds that RE2 (a DFA, about a nanosecond per byte) runs once over the encoded
attributes of a whole request. Only the spans it flags go through the exact Python patterns.

Hashes are HMAC-SHA256 keyed with ``PII_HASH_SALT``: equal values give equal hashes (you can
still count distinct users) but a hash cannot be reversed by trying likely values without the
salt.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import hmac
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import re2

Strategy = Literal["mask", "hash", "remove"]

#: detector name -> (exact pattern, trigger). The trigger matches wherever the exact pattern can
#: (a superset), is RE2 syntax, and also fires on JSON-escaped text. Order matters: earlier
#: detectors win where matches overlap.
DETECTORS: dict[str, tuple[str, str]] = {
    # Whitespace may also be JSON-escaped (``\t``, ``\n``: message arrays are scanned as text).
    "bearer_token": (r"\b[Bb]earer(?:\s|\\[tnr])+[A-Za-z0-9\-._~+/]{8,}=*", r"[Bb]earer(?:\s|\\[tnr])"),
    "api_key": (
        r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_-]{20,}"
        r"|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}"
        r"|xox[abprs]-[A-Za-z0-9-]{10,}|hf_[A-Za-z0-9]{30,}|llmobs_[a-z0-9]{12}_[A-Za-z0-9]{32})",
        r"sk-|AIza|gh[pousr]_|github_pat_|xox[abprs]-|hf_|llmobs_[a-z0-9]{12}_",
    ),
    "aws_access_key": (r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b", r"A(?:KIA|SIA|IDA|ROA)[0-9A-Z]{16}"),
    # The local part may be non-ASCII, or \u-escaped in JSON text, and may follow a JSON escape
    # (``\n``), which the match must leave whole (else the text is no longer valid JSON).
    "email": (
        r"(?:(?<=\\[nrtbf\"/])|(?<![\w.%+\-\\]))(?:[\w.%+-]|\\u[0-9A-Fa-f]{4})+"
        r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        r"[^\s@\"]@[A-Za-z0-9-]+\.",
    ),
    "credit_card": (r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", r"\d(?:[ -]?\d){12}"),
    "us_ssn": (r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])", r"\d{3}-\d{2}-\d{4}"),
    "phone": (
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]\d{3}[ .-]\d{4}(?!\w)"
        r"|(?<![\w+])\+\d{1,3}(?:[ .-]\d{1,4}){2,5}(?![\w-])",
        r"\d{3}\)?[ .-]\d{3}[ .-]\d{4}|\+\d{1,3}[ .-]?\d",
    ),
    "ipv4": (
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])",
        r"\d\.\d{1,3}\.\d{1,3}\.\d",
    ),
    "ipv6": (r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])", r"[0-9A-Fa-f]?:[0-9A-Fa-f]{0,4}:"),
}
SECRET_DETECTORS = ("bearer_token", "api_key", "aws_access_key")

# Strings shorter than the shortest thing any detector finds are not scanned.
_MIN_SCAN_LENGTH = 6  # "a@b.io"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


#: Matches that also need a check the regex cannot do.
_VALIDATORS: dict[str, Callable[[str], bool]] = {"credit_card": _is_card, "ipv6": _is_ipv6}


@dataclass(frozen=True)
class RedactionRules:
    detectors: tuple[str, ...] = SECRET_DETECTORS
    strategy: Strategy = "mask"
    drop_keys: tuple[str, ...] = ()
    hash_keys: tuple[str, ...] = ()
    salt: bytes = b""

    @property
    def needs_salt(self) -> bool:
        return bool(self.hash_keys) or (self.strategy == "hash" and bool(self.detectors))


def parse_list(value: str) -> tuple[str, ...]:
    """A comma-separated setting as a tuple; ``none`` or empty gives ()."""
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return () if items in ((), ("none",)) else items


class _KeyMatcher:
    """Exact keys in a set, wildcard keys in one regex."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.exact = frozenset(p for p in patterns if "*" not in p and "?" not in p)
        globs = [fnmatch.translate(p) for p in patterns if p not in self.exact]
        self.glob = re.compile("|".join(globs)) if globs else None
        self._seen: dict[str, bool] = {}  # keys repeat across spans: match each glob once

    def __bool__(self) -> bool:
        return bool(self.exact) or self.glob is not None

    def __call__(self, key: str) -> bool:
        if key in self.exact:
            return True
        if self.glob is None:
            return False
        hit = self._seen.get(key)
        if hit is None:
            if len(self._seen) >= 10_000:
                self._seen.clear()
            hit = self._seen[key] = self.glob.match(key) is not None
        return hit


class Redactor:
    """Applies :class:`RedactionRules` to attribute dicts and strings, in place where possible."""

    def __init__(self, rules: RedactionRules) -> None:
        unknown = [d for d in rules.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
        self.rules = rules
        self._drop = _KeyMatcher(rules.drop_keys)
        self._hash = _KeyMatcher(rules.hash_keys)
        self._regex = (
            re.compile("|".join(f"(?P<{d}>{DETECTORS[d][0]})" for d in rules.detectors)) if rules.detectors else None
        )
        self._trigger = re2.compile("|".join(DETECTORS[d][1] for d in rules.detectors)) if rules.detectors else None
        self.active = bool(self._regex) or bool(self._drop) or bool(self._hash)
        #: whether key rules are configured (they apply to every span, without a trigger)
        self.has_key_rules = bool(self._drop) or bool(self._hash)
        #: whether value detectors are configured
        self.scans = self._regex is not None
        #: number of values changed since the last read (a metric)
        self.redactions = 0

    # -- values -----------------------------------------------------------------------------

    def hash_value(self, text: str) -> str:
        return hmac.new(self.rules.salt, text.encode(), hashlib.sha256).hexdigest()[:16]

    def _replace(self, m: re.Match[str]) -> str:
        name = m.lastgroup or "pii"
        text = m.group()
        check = _VALIDATORS.get(name)
        if check is not None and not check(text):
            return text
        self.redactions += 1
        strategy = self.rules.strategy
        if strategy == "mask":
            return f"[REDACTED:{name}]"
        if strategy == "hash":
            return f"[{name}:{self.hash_value(text)}]"
        return ""

    def scrub(self, text: str) -> str:
        """``text`` with every detector match replaced."""
        if self._regex is None or len(text) < _MIN_SCAN_LENGTH or self._regex.search(text) is None:
            return text
        return self._regex.sub(self._replace, text)

    def scrub_columns(self, row: Any, columns: Iterable[str]) -> dict[str, Any]:
        """The text fields ``columns`` of ``row`` (a row NamedTuple) scrubbed, for
        ``row._replace(**...)``: a field the scrub leaves empty becomes None."""
        return {column: (self.scrub(value) or None) if (value := getattr(row, column)) else value for column in columns}

    def _scrub_any(self, value: Any) -> Any:
        if type(value) is str:
            return self.scrub(value)
        if type(value) is list:
            return [self._scrub_any(v) for v in value]
        if type(value) is dict:
            self.scrub_values(value)
        return value

    def triggered(self, texts: list[str]) -> list[int]:
        """Indexes of ``texts`` where a detector may match: one RE2 pass over all of them."""
        return self.triggered_parts(texts, range(len(texts)))

    def triggered_parts(self, parts: list[str], firsts: Sequence[int]) -> list[int]:
        """:meth:`triggered` for texts given in pieces, without joining each text first: text ``i``
        is ``parts[firsts[i]:firsts[i + 1]]`` joined by newlines (``firsts`` ascending, from 0).
        The one RE2 pass runs over the same string as ``triggered`` of the joined texts."""
        if self._trigger is None or not parts:
            return []
        joined = "\n".join(parts)
        match = self._trigger.search(joined)
        if match is None:
            return []
        offsets = list(itertools.accumulate((len(p) + 1 for p in parts[:-1]), initial=0))
        starts = [offsets[i] for i in firsts]
        hits = []
        while match is not None:
            index = bisect.bisect_right(starts, match.start()) - 1
            hits.append(index)
            if index + 1 >= len(starts):
                break
            match = self._trigger.search(joined, starts[index + 1])
        return hits

    # -- keys ---------------------------------------------------------------------------------

    def drops(self, key: str | None) -> bool:
        return key is not None and bool(self._drop) and self._drop(key)

    def hashes(self, key: str | None) -> bool:
        return key is not None and bool(self._hash) and self._hash(key)

    def hashed(self, value: Any) -> str:
        self.redactions += 1
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        return f"[HASH:{self.hash_value(text)}]"

    def apply_keys(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Apply the key rules (drop, hash) to an attribute dict in place."""
        if self.has_key_rules:
            for key in list(attrs):
                if self._drop(key):
                    del attrs[key]
                    self.redactions += 1
                elif self._hash(key):
                    attrs[key] = self.hashed(attrs[key])
        return attrs

    def attributes(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Redact an attribute dict in place (and return it): key rules, then value detectors."""
        return self.scrub_values(self.apply_keys(attrs))

    def scrub_values(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Run the value detectors on every string of an attribute dict, in place."""
        if self._regex is not None:
            for key, value in attrs.items():
                if type(value) is str:
                    if len(value) >= _MIN_SCAN_LENGTH and self._regex.search(value) is not None:
                        attrs[key] = self._regex.sub(self._replace, value)
                elif type(value) is list or type(value) is dict:
                    attrs[key] = self._scrub_any(value)
        return attrs

    def column_keys(self, value: str | None, key: str | None) -> str | None:
        """The key rules of attribute ``key`` applied to a normalized column taken from it."""
        if value is None or self.drops(key):
            return None
        if self.hashes(key):
            return self.hashed(value)
        return value

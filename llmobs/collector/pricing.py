"""Model prices: which row of ``model_prices`` applies to a span, and what the span cost.

A row applies when its case-insensitive regex matches the model name (searched anywhere, so
patterns anchor themselves: ``(^|/)gpt-4o$`` also matches ``openai/gpt-4o``), its provider is
empty or equals the span's provider, and its ``valid_from`` is on or before the span's day. Among
the rows that apply, a project's own row beats a global one, a provider-specific row beats a
generic one, a later ``valid_from`` beats an earlier one, and a longer pattern beats a shorter one.

Token accounting follows OTel: input tokens include cached (cache read) and cache-write tokens,
and output tokens include reasoning tokens. When an SDK reports them disjoint (cached + written >
input), input is taken as the uncached part. Prices are USD per million tokens; a usage type
without its own price (cached input, cache write, reasoning) is charged at the input or output
price.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.collector.normalize import Normalized, provider_name
from llmobs.errors import UsageError
from llmobs.store import audit

if TYPE_CHECKING:
    import psycopg

PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "reasoning_per_mtok",
)
_SELECT = (
    "SELECT mp.id, mp.project_id, p.name, mp.provider, mp.model_pattern, mp.input_per_mtok, "
    "mp.output_per_mtok, mp.cached_input_per_mtok, mp.cache_write_per_mtok, mp.reasoning_per_mtok, "
    "mp.valid_from, mp.source FROM model_prices mp LEFT JOIN projects p ON p.id = mp.project_id"
)
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class PriceRule:
    """One row of ``model_prices``."""

    model_pattern: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    reasoning_per_mtok: float | None = None
    provider: str | None = None
    valid_from: date = date(2000, 1, 1)
    project_id: int | None = None
    project: str | None = None
    source: str = "seed"
    id: int | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_pattern(self.model_pattern))

    def cost(self, n: Normalized) -> float | None:
        """USD for the span's token counts; None when it reports no tokens at all."""
        if n.input_tokens is None and n.output_tokens is None:
            return None
        inp = n.input_tokens or 0
        out = n.output_tokens or 0
        read = n.cached_input_tokens or 0
        written = n.cache_write_tokens or 0
        uncached = inp - read - written if read + written <= inp else inp
        read_price = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_price = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        total = uncached * self.input_per_mtok + read * read_price + written * write_price
        reasoning = n.reasoning_tokens or 0
        if self.reasoning_per_mtok is not None and 0 < reasoning <= out:
            total += (out - reasoning) * self.output_per_mtok + reasoning * self.reasoning_per_mtok
        else:
            total += out * self.output_per_mtok
        return total / 1_000_000

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "provider": self.provider,
            "model_pattern": self.model_pattern,
            **{f: getattr(self, f) for f in PRICE_FIELDS},
            "valid_from": self.valid_from.isoformat(),
            "source": self.source,
        }


def compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise UsageError(f"model pattern {pattern!r} is not a valid regular expression: {exc}") from None


class Pricing:
    """The price rules in memory, with a bounded cache of (project, provider, model, day) lookups."""

    def __init__(self, rules: Iterable[PriceRule] = ()) -> None:
        self.rules = list(rules)
        self._cache: dict[tuple[int, str | None, str, date], PriceRule | None] = {}

    def find(self, project_id: int, provider: str | None, model: str, day: date) -> PriceRule | None:
        key = (project_id, provider, model, day)
        try:
            return self._cache[key]
        except KeyError:
            pass
        best: PriceRule | None = None
        best_rank: tuple = ()
        for rule in self.rules:
            if rule.project_id is not None and rule.project_id != project_id:
                continue
            if rule.provider is not None and rule.provider != provider:
                continue
            if rule.valid_from > day or rule.regex.search(model) is None:
                continue
            rank = (rule.project_id is not None, rule.provider is not None, rule.valid_from, len(rule.model_pattern))
            if best is None or rank > best_rank:
                best, best_rank = rule, rank
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = best
        return best


# ---------------------------------------------------------------------------------------------
# the table


def _rule_from_row(row: tuple) -> PriceRule:
    (id_, project_id, project, provider, pattern, inp, out, cached, write, reasoning, valid_from, source) = row
    return PriceRule(
        model_pattern=pattern,
        input_per_mtok=inp,
        output_per_mtok=out,
        cached_input_per_mtok=cached,
        cache_write_per_mtok=write,
        reasoning_per_mtok=reasoning,
        provider=provider_name(provider),
        valid_from=valid_from,
        project_id=project_id,
        project=project,
        source=source,
        id=id_,
    )


def load_rules(conn: psycopg.Connection) -> list[PriceRule]:
    return [_rule_from_row(r) for r in conn.execute(_SELECT + " ORDER BY mp.id").fetchall()]


async def aload_rules(conn: psycopg.AsyncConnection) -> list[PriceRule]:
    cur = await conn.execute(_SELECT + " ORDER BY mp.id")
    return [_rule_from_row(r) for r in await cur.fetchall()]


def list_prices(conn: psycopg.Connection, *, project: str | None = None) -> list[PriceRule]:
    """Global rows, plus the rows of ``project`` when given (all rows when None)."""
    rules = load_rules(conn)
    if project is None:
        return rules
    return [r for r in rules if r.project is None or r.project == project]


def set_price(conn: psycopg.Connection, rule: PriceRule, *, source: str = "cli", actor: str | None = None) -> PriceRule:
    """Insert or update the row with the same (project, provider, pattern, valid_from); with an
    ``actor``, record the change in the audit log (same transaction)."""
    row = conn.execute(
        """INSERT INTO model_prices (project_id, provider, model_pattern, input_per_mtok, output_per_mtok,
                                     cached_input_per_mtok, cache_write_per_mtok, reasoning_per_mtok,
                                     valid_from, source, updated_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (COALESCE(project_id, 0), COALESCE(provider, ''), model_pattern, valid_from)
           DO UPDATE SET input_per_mtok = EXCLUDED.input_per_mtok, output_per_mtok = EXCLUDED.output_per_mtok,
                         cached_input_per_mtok = EXCLUDED.cached_input_per_mtok,
                         cache_write_per_mtok = EXCLUDED.cache_write_per_mtok,
                         reasoning_per_mtok = EXCLUDED.reasoning_per_mtok, source = EXCLUDED.source,
                         updated_at = now()
           RETURNING id""",
        (
            rule.project_id,
            rule.provider,
            rule.model_pattern,
            rule.input_per_mtok,
            rule.output_per_mtok,
            rule.cached_input_per_mtok,
            rule.cache_write_per_mtok,
            rule.reasoning_per_mtok,
            rule.valid_from,
            source,
        ),
    ).fetchone()
    assert row is not None
    found = conn.execute(_SELECT + " WHERE mp.id = %s", (row[0],)).fetchone()
    assert found is not None
    saved = _rule_from_row(found)
    if actor is not None:
        details = {k: v for k, v in saved.to_dict().items() if k not in ("id", "project")}
        audit.record(
            conn,
            "price.set",
            actor=actor,
            project_id=saved.project_id,
            target=saved.model_pattern,
            source=audit.cli_source(),
            details=details,
        )
    return saved


def project_id_of(conn: psycopg.Connection, project: str) -> int:
    row = conn.execute("SELECT id FROM projects WHERE name = %s", (project,)).fetchone()
    if row is None:
        raise UsageError(f"no project named {project!r}", hint="`llmobs keys list` shows the projects")
    return row[0]


def parse_price_file(path: Path) -> list[dict[str, Any]]:
    """Rows of a price file: CSV with a header, or JSON (a list of objects).

    Fields: ``model_pattern`` (required), ``input_per_mtok``, ``output_per_mtok`` (required),
    ``cached_input_per_mtok``, ``cache_write_per_mtok``, ``reasoning_per_mtok``, ``provider``,
    ``valid_from`` (YYYY-MM-DD).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise UsageError(f"{path}: expected a JSON list of objects")
        return data
    return list(csv.DictReader(io.StringIO(text)))


def rule_from_fields(
    fields: dict[str, Any], *, where: str, project_id: int | None = None, project: str | None = None
) -> PriceRule:
    """A PriceRule from loose fields (a file row, CLI options); a UsageError naming ``where``."""

    def number(name: str, required: bool) -> float | None:
        value = fields.get(name)
        if value is None or value == "":
            if required:
                raise UsageError(f"{where}: {name} is required")
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {name} {value!r} is not a number") from None
        if number < 0 or number != number:
            raise UsageError(f"{where}: {name} must be zero or more")
        return number

    pattern = str(fields.get("model_pattern") or "").strip()
    if not pattern:
        raise UsageError(f"{where}: model_pattern is required")
    valid_from = fields.get("valid_from") or "2000-01-01"
    try:
        day = valid_from if isinstance(valid_from, date) else date.fromisoformat(str(valid_from))
    except ValueError:
        raise UsageError(f"{where}: valid_from {valid_from!r} is not a date (YYYY-MM-DD)") from None
    try:
        return PriceRule(
            model_pattern=pattern,
            input_per_mtok=number("input_per_mtok", True),  # type: ignore[arg-type]
            output_per_mtok=number("output_per_mtok", True),  # type: ignore[arg-type]
            cached_input_per_mtok=number("cached_input_per_mtok", False),
            cache_write_per_mtok=number("cache_write_per_mtok", False),
            reasoning_per_mtok=number("reasoning_per_mtok", False),
            provider=provider_name(fields.get("provider") or None),
            valid_from=day,
            project_id=project_id,
            project=project,
        )
    except UsageError as exc:
        raise UsageError(f"{where}: {exc.message}") from None


def import_prices(
    conn: psycopg.Connection, path: Path, *, project: str | None = None, actor: str | None = None
) -> list[PriceRule]:
    """Upsert every row of a price file (all or nothing: the caller's transaction)."""
    project_id = project_id_of(conn, project) if project else None
    rules = [
        rule_from_fields(f, where=f"{path.name} row {i}", project_id=project_id, project=project)
        for i, f in enumerate(parse_price_file(path), start=1)
    ]
    saved = [set_price(conn, r, source=f"import:{path.name}") for r in rules]
    if actor is not None:
        audit.record(
            conn,
            "price.import",
            actor=actor,
            project_id=project_id,
            target=path.name,
            source=audit.cli_source(),
            details={"rows": len(saved)},
        )
    return saved

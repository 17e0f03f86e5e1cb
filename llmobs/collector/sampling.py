"""Head and tail sampling (both off by default).

Head sampling keeps a trace when the low 64 bits of its id fall under ``rate * 2**64``: the
same rule as OpenTelemetry's TraceIdRatioBased sampler, so every collector instance (and an SDK
sampling at the same rate) keeps the same traces, whole.

Tail sampling holds each trace's spans in memory for a decision wait counted from its first
span, then keeps the whole trace when any span has an error, any span is slower than the latency
threshold, the trace's total cost reaches the cost threshold, or a span carries the priority
attribute; the other traces are kept at ``rate`` (decided from the trace id as above). Spans of
a trace arriving after its decision follow it. Held spans are acknowledged to the client before
they are written: a crash during the wait loses them. Traces are assembled per collector
process, so a trace whose spans reach different processes is decided separately by each.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmobs.store.spans import SpanRow

if TYPE_CHECKING:
    from llmobs.collector.metrics import CollectorMetrics
    from llmobs.config import Settings

_ID_SPACE = 2**64
DECISIONS_REMEMBERED = 100_000


def head_keep(trace_id: str, rate: float) -> bool:
    """Whether head sampling at ``rate`` keeps trace ``trace_id`` (32 hex chars)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return int(trace_id[16:], 16) < round(rate * _ID_SPACE)


def head_sample(rows: list[SpanRow], rate: float) -> list[SpanRow]:
    if rate >= 1.0:
        return rows
    return [r for r in rows if head_keep(r.trace_id, rate)]


@dataclass(frozen=True)
class TailPolicy:
    decision_wait: float = 10.0
    latency_ms: float = 5000.0
    cost_usd: float = 0.05
    rate: float = 0.1
    max_spans: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> TailPolicy:
        return cls(
            decision_wait=settings.get_float("SAMPLING_TAIL_DECISION_WAIT_SECONDS"),
            latency_ms=settings.get_float("SAMPLING_TAIL_LATENCY_MS"),
            cost_usd=settings.get_float("SAMPLING_TAIL_COST_USD"),
            rate=min(settings.get_float("SAMPLING_TAIL_RATE"), 1.0),
            max_spans=settings.get_int("SAMPLING_TAIL_MAX_SPANS"),
        )


class _Held:
    __slots__ = ("cost", "first_seen", "interesting", "rows", "source")

    def __init__(self, now: float, source: str) -> None:
        self.rows: list[SpanRow] = []
        self.source = source
        self.first_seen = now
        self.cost = 0.0
        self.interesting = False  # error, slow or priority: kept whatever the rate


class TailSampler:
    def __init__(
        self, policy: TailPolicy, write: Callable[[list[SpanRow], str], None], metrics: CollectorMetrics
    ) -> None:
        """``write(rows, source)`` queues kept rows for writing (already acknowledged)."""
        self.policy = policy
        self._write = write
        self._metrics = metrics
        self._held: OrderedDict[tuple[int, str], _Held] = OrderedDict()  # oldest first
        self._held_spans = 0
        self._decided: OrderedDict[tuple[int, str], bool] = OrderedDict()

    @property
    def held_spans(self) -> int:
        return self._held_spans

    def add(self, rows: Iterable[SpanRow], priority_traces: set[str], source: str) -> None:
        """Hold ``rows`` until their trace is decided (late spans follow an earlier decision)."""
        now = time.monotonic()
        latency = self.policy.latency_ms
        follow: list[SpanRow] = []
        dropped = 0
        for row in rows:
            key = (row.project_id, row.trace_id)
            decided = self._decided.get(key)
            if decided is not None:
                if decided:
                    follow.append(row)
                else:
                    dropped += 1
                continue
            held = self._held.get(key)
            if held is None:
                held = self._held[key] = _Held(now, source)
            held.rows.append(row)
            if row.cost_usd:
                held.cost += row.cost_usd
            if (
                row.status_code == "error"
                or (latency and row.duration_ms >= latency)
                or row.trace_id in priority_traces
            ):
                held.interesting = True
            self._held_spans += 1
        if follow:
            self._write(follow, source)
        if dropped:
            self._metrics.spans_sampled_out.labels(sampler="tail").inc(dropped)
        if self._held_spans > self.policy.max_spans:
            self._decide(lambda held: self._held_spans > self.policy.max_spans * 0.9)
        self._metrics.tail_held_spans.set(self._held_spans)

    def keep(self, trace_id: str, held: _Held) -> bool:
        cost = self.policy.cost_usd
        return held.interesting or bool(cost and held.cost >= cost) or head_keep(trace_id, self.policy.rate)

    def _decide(self, more: Callable[[_Held], bool]) -> None:
        """Decide the oldest traces while ``more(oldest)`` says so."""
        kept: dict[str, list[SpanRow]] = {}
        dropped = 0
        while self._held:
            key, held = next(iter(self._held.items()))
            if not more(held):
                break
            del self._held[key]
            self._held_spans -= len(held.rows)
            decision = self.keep(key[1], held)
            if decision:
                kept.setdefault(held.source, []).extend(held.rows)
            else:
                dropped += len(held.rows)
            self._decided[key] = decision
            if len(self._decided) > DECISIONS_REMEMBERED:
                self._decided.popitem(last=False)
        for source, rows in kept.items():
            self._write(rows, source)
        if dropped:
            self._metrics.spans_sampled_out.labels(sampler="tail").inc(dropped)
        self._metrics.tail_held_spans.set(self._held_spans)

    def decide_due(self) -> None:
        deadline = time.monotonic() - self.policy.decision_wait
        self._decide(lambda held: held.first_seen <= deadline)

    def flush(self) -> None:
        """Decide every held trace now (shutdown)."""
        self._decide(lambda held: True)

    async def run(self) -> None:
        interval = max(0.05, min(1.0, self.policy.decision_wait / 4))
        while True:
            await asyncio.sleep(interval)
            self.decide_due()

"""A trace as a tree: spans nested under their parents, with totals over the whole trace.

Real traces are not always well formed: a parent may be missing (not sent, or sampled away),
two spans may name each other as parent, and a buggy client may nest thousands deep. Spans whose
parent is absent become roots, cycles are broken, and nesting deeper than :data:`MAX_DEPTH`
is flattened under the span at that depth, so the result is always a finite tree.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def _nest(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for node in nodes:
        by_id.setdefault(node["span_id"], node)
    roots: list[dict[str, Any]] = []
    for node in nodes:
        parent = by_id.get(node["parent_span_id"]) if node["parent_span_id"] else None
        if parent is None or parent is node or by_id[node["span_id"]] is not node:
            roots.append(node)
        else:
            parent["children"].append(node)
    placed: set[int] = set()
    _place(roots, placed)
    # Whatever no root reaches sits on a cycle: cut it at its earliest span.
    for node in nodes:
        if id(node) not in placed:
            parent = by_id[node["parent_span_id"]]
            parent["children"] = [c for c in parent["children"] if c is not node]
            roots.append(node)
            _place([node], placed)
    return roots


def _place(roots: list[dict[str, Any]], placed: set[int]) -> None:
    stack = [(node, 0) for node in roots]
    while stack:
        node, depth = stack.pop()
        placed.add(id(node))
        if depth == MAX_DEPTH - 1 and node["children"]:
            node["children"] = _descendants(node, placed)
            continue
        stack.extend((child, depth + 1) for child in node["children"])


def _descendants(node: dict[str, Any], placed: set[int]) -> list[dict[str, Any]]:
    flat, todo = [], list(node["children"])
    while todo:
        child = todo.pop()
        if id(child) in placed:
            continue
        placed.add(id(child))
        todo.extend(child["children"])
        child["children"] = []
        flat.append(child)
    flat.sort(key=lambda s: (s["start_time"], s["span_id"]))
    return flat


def _total(rows: list[dict[str, Any]], key: str) -> Any:
    """The sum of ``key`` over the rows that have it; None when none has (SQL's ``sum``, as the
    trace list computes it: one rule for null versus 0 on every read path)."""
    values = [r[key] for r in rows if r[key] is not None]
    return sum(values) if values else None


def build_trace(rows: list[dict[str, Any]], *, truncated: bool = False) -> dict[str, Any]:
    """The trace of ``rows`` (its spans, in start order): totals and the tree of spans."""
    nodes = [{**row, "children": []} for row in rows]
    start = min(r["start_time"] for r in rows)
    end = max(r["end_time"] for r in rows)
    return {
        "trace_id": rows[0]["trace_id"],
        "start_time": start,
        "end_time": end,
        "duration_ms": (end - start).total_seconds() * 1000,
        "span_count": len(rows),
        "error_count": sum(1 for r in rows if r["status_code"] == "error"),
        "input_tokens": _total(rows, "input_tokens"),
        "output_tokens": _total(rows, "output_tokens"),
        "total_tokens": _total(rows, "total_tokens"),
        "cost_usd": _total(rows, "cost_usd"),
        "services": sorted({r["service_name"] for r in rows}),
        "models": sorted({m for r in rows if (m := r["response_model"] or r["request_model"])}),
        "truncated": truncated,
        "roots": _nest(nodes),
    }

// Per-session and per-user totals from POST /api/v1/query (spans grouped by one field).
import { api, el, fmtCost, fmtNum, showError } from "/ui/static/common.js";

/** Fill ``table``'s body with the groups of ``field`` over ``days``; ``link`` makes the first cell. */
export async function groupTotals(field, days, tableId, link) {
  const body = document.querySelector(`#${tableId} tbody`);
  const state = document.getElementById("list-state");
  state.textContent = "Loading…";
  try {
    const result = await api("/api/v1/query", {
      method: "POST",
      body: {
        from: new Date(Date.now() - days * 86400e3).toISOString(),
        filters: [{ field, op: "exists" }],
        group_by: [field],
        aggregates: [
          { fn: "count", alias: "calls" },
          { fn: "count_distinct_traces", alias: "traces" },
          { fn: "sum", field: "total_tokens", alias: "tokens" },
          { fn: "sum", field: "cost_usd", alias: "cost" },
        ],
        order_by: [{ key: "traces", desc: true }],
        limit: 500,
      },
    });
    const col = Object.fromEntries(result.columns.map((c, i) => [c, i]));
    body.replaceChildren(
      ...result.rows.map((r) =>
        el(
          "tr",
          {},
          el("td", {}, link(r[col[field]])),
          ...link.columns(r, col).map((v) => el("td", { class: "num", text: v })),
        ),
      ),
    );
    state.textContent = result.rows.length ? `${result.rows.length} ${field === "user_id" ? "users" : "sessions"}` : "None in this range.";
    document.body.dataset.ready = "groups";
  } catch (err) {
    showError(state, err);
  }
}

export const cells = {
  sessions: (r, col) => [fmtNum(r[col.traces]), fmtNum(r[col.calls]), fmtNum(r[col.tokens]), fmtCost(r[col.cost])],
  users: (r, col) => [fmtNum(r[col.calls]), fmtNum(r[col.traces]), fmtNum(r[col.tokens]), fmtCost(r[col.cost])],
};

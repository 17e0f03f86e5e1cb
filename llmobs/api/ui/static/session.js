// A session's traces in the order they started (oldest first), every page of them.
import { api, fromFor, showError, traceRow } from "/ui/static/common.js";

const sessionId = document.getElementById("session").dataset.sessionId;
const body = document.querySelector("#traces tbody");
const state = document.getElementById("list-state");

async function load() {
  let cursor = null;
  try {
    do {
      const params = new URLSearchParams({ from: fromFor("30d"), session_id: sessionId, order: "asc", limit: "200" });
      if (cursor) params.set("cursor", cursor);
      const page = await api(`/api/v1/traces?${params}`);
      body.append(...page.traces.map(traceRow));
      cursor = page.next_cursor;
    } while (cursor && body.rows.length < 2000);
    state.textContent = `${body.rows.length} traces`;
    document.body.dataset.ready = "session";
  } catch (err) {
    showError(state, err);
  }
}
load();

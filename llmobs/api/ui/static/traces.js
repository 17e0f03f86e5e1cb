// The trace list: filters kept in the URL, cursor paging, and new traces arriving live from the
// API's server-sent event stream (the first page is fetched again, so the filters still apply).
import { api, el, fromFor, showError, traceRow } from "/ui/static/common.js";

const form = document.getElementById("filters");
const body = document.querySelector("#traces tbody");
const more = document.getElementById("more");
const state = document.getElementById("list-state");
const live = document.getElementById("live");
const FIELDS = ["service", "model", "provider", "status", "user_id", "session_id", "min_cost_usd", "min_duration_ms", "score_name", "q"];
// The feedback choice is a score filter on the UI's thumbs (1 up, 0 down).
const FEEDBACK = { up: { score_name: "thumbs", min_score: "1" }, down: { score_name: "thumbs", max_score: "0" } };
let cursor = null;
const shown = new Set();

function readUrl() {
  const params = new URLSearchParams(location.search);
  for (const [name, value] of params) if (form.elements[name]) form.elements[name].value = value;
}

function query(extra = {}) {
  const params = new URLSearchParams();
  params.set("from", fromFor(form.elements.range.value));
  params.set("limit", "50");
  for (const name of FIELDS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const [k, v] of Object.entries(FEEDBACK[form.elements.feedback.value] || {})) params.set(k, v);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params;
}

async function load(append) {
  state.classList.remove("error");
  state.textContent = "Loading…";
  try {
    const page = await api(`/api/v1/traces?${query(append && cursor ? { cursor } : {})}`);
    if (!append) {
      body.replaceChildren();
      shown.clear();
    }
    for (const t of page.traces) {
      shown.add(t.trace_id);
      body.append(traceRow(t));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    state.textContent = body.rows.length ? `${body.rows.length} traces` : "No traces match.";
    document.body.dataset.drawMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "list";
  } catch (err) {
    showError(state, err);
  }
}

let pending = null;
async function prependNew() {
  pending = null;
  try {
    const page = await api(`/api/v1/traces?${query()}`);
    const fresh = page.traces.filter((t) => !shown.has(t.trace_id)).reverse();
    for (const t of fresh) {
      shown.add(t.trace_id);
      const row = traceRow(t);
      row.classList.add("new");
      body.prepend(row);
    }
    if (fresh.length) live.textContent = `${fresh.length} new trace${fresh.length > 1 ? "s" : ""}`;
  } catch (err) {
    showError(live, err);
  }
}

function follow() {
  const stream = new EventSource("/api/v1/traces/stream");
  stream.addEventListener("trace", () => {
    if (!pending) pending = setTimeout(prependNew, 300);
  });
  stream.addEventListener("status", (ev) => {
    const data = JSON.parse(ev.data);
    document.body.dataset.stream = data.redis;
  });
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const params = new URLSearchParams();
  for (const name of ["range", "feedback", ...FIELDS]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  history.replaceState(null, "", `?${params}`);
  cursor = null;
  load(false);
});
more.addEventListener("click", () => load(true));
readUrl();
load(false);
follow();

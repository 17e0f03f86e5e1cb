// One trace: the span tree and its timeline side by side in one virtualized list (only the rows
// in view exist in the DOM, so 10,000 spans stay responsive), keyboard navigable as an ARIA tree;
// the selected span's detail beside it; the trace's scores and the feedback form below.
import { api, el, fmtCost, fmtMs, fmtNum, fmtTime, showError } from "/ui/static/common.js";

const ROW = 24; // px, the height of one row (matches .row in ui.css)
const OVERSCAN = 10;
const root = document.getElementById("trace");
const traceId = root.dataset.traceId;
const tree = document.getElementById("tree");
const spacer = document.getElementById("tree-spacer");
const detail = document.getElementById("detail");
const summary = document.getElementById("trace-summary");

let nodes = []; // flattened spans: {span, depth, parent, children: [index], collapsed}
let visible = []; // indices of nodes shown, in order
let position = new Map(); // node index -> position in visible
let selected = -1; // node index
let t0 = 0;
let total = 1;
const rows = new Map(); // visible position -> row element

function flatten(roots) {
  const out = [];
  const stack = roots.map((span) => [span, 0, -1]).reverse();
  while (stack.length) {
    const [span, depth, parent] = stack.pop();
    const index = out.length;
    out.push({ span, depth, parent, children: [], collapsed: false });
    if (parent >= 0) out[parent].children.push(index);
    for (let i = span.children.length - 1; i >= 0; i--) stack.push([span.children[i], depth + 1, index]);
    span.children = null; // the flat list holds the structure now
  }
  return out;
}

function computeVisible() {
  visible = [];
  position = new Map();
  let skipBelow = Infinity; // depth of a collapsed ancestor being skipped
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i];
    if (n.depth > skipBelow) continue;
    skipBelow = n.collapsed ? n.depth : Infinity;
    position.set(i, visible.length);
    visible.push(i);
  }
  spacer.style.height = `${visible.length * ROW}px`;
  for (const row of rows.values()) row.remove();
  rows.clear();
  render();
}

function makeRow(index) {
  const n = nodes[index];
  const s = n.span;
  const start = new Date(s.start_time).getTime() - t0;
  const left = (100 * start) / total;
  const width = Math.max(0.2, (100 * (s.duration_ms || 0)) / total);
  const failed = s.status_code === "error";
  const label = el("span", { class: "label" });
  label.style.paddingLeft = `${n.depth * 14 + 4}px`;
  label.append(
    el("span", { class: "caret", "aria-hidden": "true", text: n.children.length ? (n.collapsed ? "▸" : "▾") : "·" }),
    el("span", { class: "name", text: s.name }),
    el("span", { class: "dur", text: fmtMs(s.duration_ms) }),
  );
  const bar = el("span", { class: failed ? "bar bad" : s.provider || s.request_model ? "bar llm" : "bar" });
  bar.style.left = `${Math.min(left, 99.8)}%`;
  bar.style.width = `${Math.min(width, 100 - Math.min(left, 99.8))}%`;
  const row = el(
    "div",
    {
      class: `row${failed ? " error" : ""}${index === selected ? " selected" : ""}`,
      role: "treeitem",
      id: `row-${index}`,
      "aria-level": n.depth + 1,
      "aria-expanded": n.children.length ? String(!n.collapsed) : null,
      "aria-selected": String(index === selected),
      "data-span-id": s.span_id,
    },
    label,
    el("span", { class: "lane" }, bar),
  );
  row.style.top = `${position.get(index) * ROW}px`;
  row.addEventListener("click", (ev) => {
    if (ev.target.classList.contains("caret") && n.children.length) toggle(index);
    select(index, true);
  });
  return row;
}

function render() {
  const first = Math.max(0, Math.floor(tree.scrollTop / ROW) - OVERSCAN);
  const last = Math.min(visible.length, Math.ceil((tree.scrollTop + tree.clientHeight) / ROW) + OVERSCAN);
  for (const [pos, row] of rows) {
    if (pos < first || pos >= last) {
      row.remove();
      rows.delete(pos);
    }
  }
  for (let pos = first; pos < last; pos++) {
    if (!rows.has(pos)) {
      const row = makeRow(visible[pos]);
      rows.set(pos, row);
      tree.append(row);
    }
  }
  tree.setAttribute("aria-activedescendant", selected >= 0 && position.has(selected) ? `row-${selected}` : "");
}

function scrollTo(index) {
  const top = position.get(index) * ROW;
  if (top < tree.scrollTop) tree.scrollTop = top;
  else if (top + ROW > tree.scrollTop + tree.clientHeight) tree.scrollTop = top + ROW - tree.clientHeight;
}

function select(index, open) {
  if (index < 0 || index >= nodes.length) return;
  selected = index;
  scrollTo(index);
  for (const row of rows.values()) row.remove();
  rows.clear();
  render();
  if (open) showDetail(nodes[index].span);
}

function toggle(index, collapse) {
  const n = nodes[index];
  if (!n.children.length) return;
  n.collapsed = collapse === undefined ? !n.collapsed : collapse;
  computeVisible();
}

tree.addEventListener("scroll", () => requestAnimationFrame(render));
tree.addEventListener("keydown", (ev) => {
  if (!nodes.length) return;
  const pos = selected >= 0 ? position.get(selected) : -1;
  const n = selected >= 0 ? nodes[selected] : null;
  switch (ev.key) {
    case "ArrowDown":
      select(visible[Math.min(visible.length - 1, pos + 1)]);
      break;
    case "ArrowUp":
      select(visible[Math.max(0, pos - 1)]);
      break;
    case "Home":
      select(visible[0]);
      break;
    case "End":
      select(visible[visible.length - 1]);
      break;
    case "PageDown":
      select(visible[Math.min(visible.length - 1, pos + Math.floor(tree.clientHeight / ROW))]);
      break;
    case "PageUp":
      select(visible[Math.max(0, pos - Math.floor(tree.clientHeight / ROW))]);
      break;
    case "ArrowRight":
      if (n && n.children.length && n.collapsed) toggle(selected, false);
      else if (n && n.children.length) select(n.children[0]);
      break;
    case "ArrowLeft":
      if (n && n.children.length && !n.collapsed) toggle(selected, true);
      else if (n && n.parent >= 0) select(n.parent);
      break;
    case "Enter":
    case " ":
      if (n) showDetail(n.span);
      break;
    default:
      return;
  }
  ev.preventDefault();
});
tree.addEventListener("focus", () => {
  if (selected < 0 && visible.length) select(visible[0]);
});

// ---- span detail --------------------------------------------------------------------------

const EVENT_ROLES = {
  "gen_ai.system.message": "system",
  "gen_ai.user.message": "user",
  "gen_ai.assistant.message": "assistant",
  "gen_ai.tool.message": "tool",
  "gen_ai.choice": "assistant",
};

/** Messages of a span: the API's input/output messages, else the GenAI events it carries. */
function messagesOf(span) {
  const given = [...(span.input_messages || []), ...(span.output_messages || [])];
  if (given.length) return given;
  const found = [];
  for (const ev of span.events || []) {
    const role = EVENT_ROLES[ev.name];
    if (!role) continue;
    const a = ev.attributes || {};
    const parts = [];
    const content = a.content ?? a["gen_ai.event.content"] ?? (a.message && a.message.content);
    if (content !== undefined && content !== null) parts.push({ type: "text", content: String(content) });
    for (const call of a.tool_calls || (a.message && a.message.tool_calls) || []) {
      parts.push({ type: "tool_call", id: call.id, name: call.function?.name || call.name, arguments: call.function?.arguments ?? call.arguments });
    }
    found.push({ role: a.role || role, parts, finish_reason: a.finish_reason || null });
  }
  return found;
}

function partNode(part) {
  if (part.type === "text") return el("div", { class: "text", text: part.content });
  if (part.type === "tool_call") {
    const args = typeof part.arguments === "string" ? part.arguments : JSON.stringify(part.arguments, null, 2);
    return el("div", { class: "tool-call" }, el("strong", { text: `call ${part.name}` }), part.id ? ` (${part.id})` : "", el("pre", { text: args ?? "" }));
  }
  if (part.type === "tool_call_response") {
    const resp = typeof part.response === "string" ? part.response : JSON.stringify(part.response, null, 2);
    return el("div", { class: "tool-result" }, el("strong", { text: `result${part.id ? ` of ${part.id}` : ""}` }), el("pre", { text: resp ?? "" }));
  }
  return el("pre", { class: "other", text: JSON.stringify(part, null, 2) });
}

function conversation(messages) {
  return el(
    "ol",
    { class: "conversation", "aria-label": "Conversation" },
    ...messages.map((m) =>
      el(
        "li",
        { class: `msg role-${m.role}` },
        el("div", { class: "role" }, m.role, m.finish_reason ? el("span", { class: "finish", text: ` · ${m.finish_reason}` }) : null, m.truncated ? el("span", { class: "finish", text: " · truncated" }) : null),
        ...(m.parts || []).map(partNode),
      ),
    ),
  );
}

function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [k, v] of pairs) if (v !== null && v !== undefined && v !== "") dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
  return dl;
}

function table(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return el("p", { class: "hint", text: "none" });
  return el(
    "table",
    { class: "kv" },
    el("tbody", {}, ...entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", {}, el("code", { text: typeof v === "string" ? v : JSON.stringify(v) }))))),
  );
}

function showDetail(s) {
  history.replaceState(null, "", `#span-${s.span_id}`);
  const failed = s.status_code === "error";
  const messages = messagesOf(s);
  const parts = [
    el("h2", { class: failed ? "bad" : null, text: s.name }),
    failed ? el("p", { class: "error", role: "alert", text: `Error${s.status_message ? `: ${s.status_message}` : ""}` }) : null,
    facts([
      ["span", s.span_id],
      ["service", s.service_name],
      ["kind", s.kind],
      ["status", s.status_code],
      ["started", fmtTime(s.start_time)],
      ["latency", fmtMs(s.duration_ms)],
      ["time to first token", s.time_to_first_token_ms != null ? fmtMs(s.time_to_first_token_ms) : null],
      ["provider", s.provider],
      ["model", s.response_model || s.request_model],
      ["operation", s.operation],
      ["input tokens", s.input_tokens != null ? fmtNum(s.input_tokens) : null],
      ["output tokens", s.output_tokens != null ? fmtNum(s.output_tokens) : null],
      ["total tokens", s.total_tokens != null ? fmtNum(s.total_tokens) : null],
      ["cost $", s.cost_usd != null ? fmtCost(s.cost_usd) : null],
      ["session", s.session_id],
      ["user", s.user_id],
    ]),
  ];
  if (messages.length) parts.push(el("h3", { text: "Conversation" }), conversation(messages));
  parts.push(el("h3", { text: "Attributes" }), table(s.attributes));
  if ((s.events || []).length) {
    parts.push(el("h3", { text: "Events" }), el("ul", { class: "events" }, ...s.events.map((e) => el("li", {}, el("strong", { text: e.name }), ` ${fmtTime(e.time)}`, table(e.attributes)))));
  }
  if ((s.links || []).length) {
    parts.push(
      el("h3", { text: "Links" }),
      el("ul", { class: "links" }, ...s.links.map((l) => el("li", {}, el("a", { href: `/ui/traces/${l.trace_id}#span-${l.span_id}`, text: `${l.trace_id === traceId ? "this trace" : l.trace_id} · span ${l.span_id}` })))),
    );
  }
  parts.push(el("h3", { text: "Resource" }), table(s.resource));
  detail.replaceChildren(...parts.filter(Boolean));
}

// ---- scores ----------------------------------------------------------------------------------

const scoreList = document.getElementById("score-list");
const scoreForm = document.getElementById("score-form");
const scoreState = document.getElementById("score-state");

function scoreItem(s) {
  const value = s.label ?? (s.name === "thumbs" ? (s.value >= 1 ? "👍 up" : "👎 down") : s.value);
  return el("li", {}, el("strong", { text: s.name }), `: ${value}`, s.comment ? ` — ${s.comment}` : "", el("span", { class: "hint", text: ` (${s.source}, ${fmtTime(s.created_at)})` }));
}

async function loadScores() {
  try {
    const { scores } = await api(`/api/v1/traces/${traceId}/scores`);
    scoreList.replaceChildren(...scores.map(scoreItem));
    if (!scores.length) scoreList.append(el("li", { class: "hint", text: "No scores yet." }));
  } catch (err) {
    showError(scoreState, err);
  }
}

if (document.getElementById("who")?.dataset.role === "reader") {
  for (const b of scoreForm.querySelectorAll("button, input")) b.disabled = true;
  scoreState.textContent = "Scoring needs a writer key.";
}
for (const button of scoreForm.querySelectorAll("button[data-thumb]")) {
  button.addEventListener("click", async () => {
    scoreState.classList.remove("error");
    try {
      await api(`/api/v1/traces/${traceId}/scores`, {
        method: "POST",
        body: { name: "thumbs", value: Number(button.dataset.thumb), comment: scoreForm.elements.comment.value, source: "ui" },
      });
      scoreForm.elements.comment.value = "";
      scoreState.textContent = "Thanks: feedback saved.";
      await loadScores();
    } catch (err) {
      showError(scoreState, err);
    }
  });
}
scoreForm.addEventListener("submit", (ev) => ev.preventDefault());

// ---- load ------------------------------------------------------------------------------------

async function load() {
  try {
    const trace = await api(`/api/v1/traces/${traceId}`);
    t0 = new Date(trace.start_time).getTime();
    total = Math.max(1, trace.duration_ms);
    nodes = flatten(trace.roots);
    document.getElementById("timeline-scale").textContent = `Timeline: 0 to ${fmtMs(trace.duration_ms)}`;
    summary.replaceChildren(
      `${fmtTime(trace.start_time)} · ${fmtNum(trace.span_count)} spans · ${fmtMs(trace.duration_ms)} · ${fmtNum(trace.total_tokens)} tokens · ${trace.cost_usd == null ? "no cost" : `$${fmtCost(trace.cost_usd)}`} · ${trace.services.join(", ")}`,
      trace.error_count ? el("span", { class: "badge bad", text: ` ${trace.error_count} error${trace.error_count > 1 ? "s" : ""}` }) : "",
      trace.truncated ? el("span", { class: "badge", text: " truncated" }) : "",
    );
    computeVisible();
    const wanted = location.hash.startsWith("#span-") ? location.hash.slice(6) : null;
    const index = wanted ? nodes.findIndex((n) => n.span.span_id === wanted) : -1;
    select(index >= 0 ? index : 0, true);
    document.body.dataset.drawMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "trace";
  } catch (err) {
    if (err.status === 404) summary.textContent = "Trace not found in this project.";
    else showError(summary, err);
    document.body.dataset.ready = "missing";
  }
}

load();
loadScores();

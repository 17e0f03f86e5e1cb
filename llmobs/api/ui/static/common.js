// Shared helpers of the UI's pages: API calls with the session cookie (and the CSRF token on
// writes), element building without innerHTML (no markup injection), number formatting.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** JSON from the API; a lost session sends the browser to the sign-in page. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    const here = location.pathname + location.search;
    location.assign(`/ui/login?next=${encodeURIComponent(here)}`);
    throw new ApiFailure(401, "unauthorized", "signed out");
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiFailure(resp.status, err.code || "http_error", err.message || `HTTP ${resp.status}`);
  }
  return data;
}

/** A new element: el("td", {class: "num"}, "12", child, ...). Text is always text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };

export function fromFor(range) {
  return new Date(Date.now() - (RANGES[range] || RANGES["24h"])).toISOString();
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtCost(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toFixed(n >= 1 ? 2 : 5);
}

export function fmtMs(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Number(n).toFixed(n < 10 ? 1 : 0)} ms`;
}

/** One table row of a trace summary (trace list, session page). */
export function traceRow(t) {
  const failed = t.error_count > 0 || t.root_status_code === "error";
  return el(
    "tr",
    { class: failed ? "error" : null, "data-trace-id": t.trace_id },
    el("td", {}, el("a", { href: `/ui/traces/${t.trace_id}` }, fmtTime(t.start_time))),
    el("td", { text: t.root_name }),
    el("td", { text: t.service_name }),
    el("td", { text: (t.models || []).join(", ") }),
    el("td", { class: "num", text: fmtNum(t.span_count) }),
    el("td", { class: "num", text: fmtNum(t.total_tokens) }),
    el("td", { class: "num", text: fmtCost(t.cost_usd) }),
    el("td", { class: "num", text: fmtNum(t.duration_ms, 1) }),
    el("td", {}, el("span", { class: failed ? "badge bad" : "badge ok", text: failed ? "error" : "ok" })),
  );
}

export function showError(node, err) {
  node.textContent = err instanceof ApiFailure ? `${err.message}` : `Something failed: ${err}`;
  node.classList.add("error");
}

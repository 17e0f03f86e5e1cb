// Requests, errors, tokens, cost and p50/p95 latency over time by model, from GET /api/v1/metrics
// (the rollups), drawn with uPlot (vendored: static/vendor/uPlot.iife.min.js, a global).
import { api, el, fromFor, showError } from "/ui/static/common.js";

const charts = document.getElementById("charts");
const state = document.getElementById("overview-state");
const form = document.getElementById("range");
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563"];
// [title, value of a point, value of a bucket without calls: 0 for counts, a gap for latency]
const PANELS = [
  ["Requests", (p) => p.requests, 0],
  ["Errors", (p) => p.errors, 0],
  ["Tokens", (p) => p.total_tokens, 0],
  ["Cost $", (p) => p.cost_usd, 0],
  ["Latency p50 ms", (p) => p.latency_p50_ms, null],
  ["Latency p95 ms", (p) => p.latency_p95_ms, null],
];

function panel(title, times, series, pick, empty) {
  const box = el("figure", { class: "chart" }, el("figcaption", { text: title }));
  charts.append(box);
  const data = [times];
  const opts = {
    width: Math.min(560, charts.clientWidth - 16),
    height: 200,
    series: [{}],
    axes: [{}, { size: 60 }],
    legend: { live: false },
  };
  series.forEach((s, i) => {
    const byTime = new Map(s.points.map((p) => [new Date(p.time).getTime() / 1000, pick(p)]));
    data.push(times.map((t) => (byTime.has(t) ? byTime.get(t) : empty)));
    opts.series.push({ label: s.group || "all", stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false });
  });
  new window.uPlot(opts, data, box);
}

async function load() {
  state.textContent = "Loading…";
  charts.replaceChildren();
  try {
    const params = new URLSearchParams({ from: fromFor(form.elements.range.value), group_by: "model" });
    const result = await api(`/api/v1/metrics?${params}`);
    const times = [...new Set(result.series.flatMap((s) => s.points.map((p) => new Date(p.time).getTime() / 1000)))].sort((a, b) => a - b);
    if (!times.length) {
      state.textContent = "No LLM calls in this range.";
    } else {
      for (const [title, pick, empty] of PANELS) panel(title, times, result.series, pick, empty);
      state.textContent = `${result.series.length} models, ${result.interval} buckets (${result.source})`;
    }
    document.body.dataset.ready = "overview";
  } catch (err) {
    showError(state, err);
  }
}

form.elements.range.addEventListener("change", load);
load();

// Switchyard dashboard: polls the JSON views every 2 s and redraws; no framework, no build step.
// Every value from the deployment is set as text (never as HTML).
"use strict";

const POLL_MS = 2000;
const $ = (sel, root = document) => root.querySelector(sel);
let serverNow = Date.now();
let lastOk = null;
let openLetter = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

async function getJSON(url, options) {
  const response = await fetch(url, Object.assign({ cache: "no-store" }, options));
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || String(response.status));
  return body;
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.round((serverNow - ms) / 1000);
  if (s < 0) return "in " + fmtSpan(-s);
  return fmtSpan(s) + " ago";
}

function fmtSpan(s) {
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  return Math.round(s / 3600) + "h";
}

// One story entry: its time, its event, and its details as name=value pairs.
function storyLine(s) {
  const details = Object.entries(s.details || {}).map(([k, v]) => k + "=" + v).join(" ");
  return el("li", { "data-event": s.event }, el("span", { class: "small" }, fmtTime(s.at_ms)), " ",
    el("b", {}, s.event), details ? " " + details : "");
}

function fmtTime(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
}

function units(map) {
  return Object.entries(map || {}).filter(([, v]) => v).map(([k, v]) => k + " " + v).join(", ");
}

function pill(text) {
  return el("span", { class: "pill " + text }, text);
}

function card(label, value) {
  return el("div", { class: "card" }, el("b", {}, value), el("span", {}, label));
}

function taskLink(id) {
  return el("a", { href: "#task=" + encodeURIComponent(id), "data-task-link": id }, id);
}

function renderFleet(o) {
  const active = o.agents.filter((a) => a.status === "active");
  const dead = o.agents.filter((a) => a.status === "dead");
  const util = active.length ? active.reduce((s, a) => s + a.utilization, 0) / active.length : 0;
  $("#fleet-cards").replaceChildren(
    card("active agents", active.length),
    card("dead (last day)", dead.length),
    card("left (last day)", o.agents.length - active.length - dead.length),
    card("mean utilisation", Math.round(util * 100) + "%"),
  );
  fill($("#fleet-table tbody"), o.agents.map((a) => {
    const lease = a.status !== "active"
      ? (a.status === "dead" ? "died " : "left ") + ago(a.left_at_ms)
      : a.lease_ms ? a.lease_ms / 1000 + "s, ends " + ago(a.lease_deadline_ms) : "none";
    const meter = el("span", { class: "meter" },
      el("i", { style: "width:" + Math.min(100, Math.round(a.utilization * 100)) + "%" }));
    return el("tr", { "data-agent": a.agent_id, "data-status": a.status, class: a.status },
      el("td", {}, a.agent_id), el("td", {}, a.agent_type), el("td", {}, pill(a.status)),
      el("td", {}, units(a.capacity)), el("td", {}, units(a.reserved)),
      el("td", {}, meter, Math.round(a.utilization * 100) + "%"),
      el("td", {}, a.performance_score.toFixed(3)), el("td", {}, a.active_tasks),
      el("td", { title: "duration relative to its type's learned pattern" },
        (a.pace_factor ?? 1).toFixed(2) + "×"),
      el("td", { title: "failing beyond its type's failure rate" },
        ((a.failure_excess ?? 0) >= 0 ? "+" : "") + (a.failure_excess ?? 0).toFixed(2)),
      el("td", { title: "pace changes detected" }, a.drifts ?? 0),
      el("td", {}, lease), el("td", {}, ago(a.last_heartbeat_ms)));
  }));
}

function renderQueue(o, t) {
  $("#queue-cards").replaceChildren(
    card("queued", o.queue_depth),
    card("waiting on dependencies", o.waiting_depth),
  );
  const max = Math.max(1, ...o.queue_by_priority.map((p) => p.depth));
  $("#queue-priorities").replaceChildren(...o.queue_by_priority.map((p) =>
    el("div", { class: "bar", title: "priority " + p.priority,
      style: "height:" + (16 + Math.round(48 * p.depth / max)) + "px" },
      "p" + p.priority + ": " + p.depth)));
  fill($("#queue-table tbody"), t.tasks.map((task) =>
    el("tr", { "data-task": task.task_id },
      el("td", {}, taskLink(task.task_id)), el("td", {}, pill(task.state)),
      el("td", {}, task.priority), el("td", { class: "wrap" }, task.detail || ""))));
}

function renderThroughput(o) {
  const buckets = o.timeline.buckets || [];
  $("#timeline-source").textContent = o.timeline.source ? "(" + o.timeline.source + ")" : "";
  const svg = $("#throughput-chart");
  const max = Math.max(1, ...buckets.map((b) => Math.max(b.counts.submitted || 0, b.counts.granted || 0)));
  // One slot per bucket over the whole span (10 minutes of 10 s), the newest at the right.
  const bucketMs = o.timeline.bucket_ms || 10000;
  const slots = 60;
  const width = 600 / slots;
  const end = buckets.length ? buckets[buckets.length - 1].at_ms : 0;
  const bars = [];
  buckets.forEach((b) => {
    const slot = slots - 1 - Math.round((end - b.at_ms) / bucketMs);
    if (slot < 0) return;
    for (const [k, color, dx] of [["submitted", "#94a3b8", 0], ["granted", "#1d4ed8", 0.5]]) {
      const h = 110 * (b.counts[k] || 0) / max;
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      r.setAttribute("x", slot * width + dx * width * 0.9);
      r.setAttribute("width", width * 0.45);
      r.setAttribute("y", 115 - h);
      r.setAttribute("height", h);
      r.setAttribute("fill", color);
      bars.push(r);
    }
  });
  svg.replaceChildren(...bars);
  const ms = (v) => (v === null || v === undefined ? "" : v + " ms");
  fill($("#throughput-table tbody"), buckets.slice().reverse().slice(0, 12).map((b) =>
    el("tr", {}, el("td", {}, fmtTime(b.at_ms)), el("td", {}, b.counts.submitted || 0),
      el("td", {}, b.counts.granted || 0), el("td", {}, b.counts.completed || 0),
      el("td", {}, b.counts.failed || 0), el("td", {}, ms(b.p50_ms)), el("td", {}, ms(b.p95_ms)),
      el("td", {}, ms(b.p99_ms)))));
}

function renderBudgets(o) {
  fill($("#budgets-table tbody"), (o.budgets || []).map((b) =>
    el("tr", { "data-budget": b.name }, el("td", {}, b.name), el("td", {}, b.kind),
      el("td", {}, b.kind === "rate" ? b.limit + " " + b.unit + " / " + b.period_ms / 1000 + "s" : b.limit),
      el("td", {}, b.available), el("td", {}, b.in_use), el("td", {}, b.debt))));
  const tenants = Object.entries(o.tenants || {});
  const total = tenants.reduce((s, [, t]) => s + t.granted, 0);
  fill($("#tenants-table tbody"), tenants.map(([name, t]) =>
    el("tr", { "data-tenant": name }, el("td", {}, name), el("td", {}, t.submitted),
      el("td", {}, t.granted), el("td", {}, total ? Math.round(100 * t.granted / total) + "%" : ""))));
  $("#counters").replaceChildren(...Object.entries(o.counters || {}).map(([k, v]) => card(k, v)));
}

async function refreshDeadLetters() {
  const d = await getJSON("/api/dead_letters.json?limit=25");
  $("#dead-letter-total").textContent = "(" + d.total + " stored)";
  fill($("#dead-letters-table tbody"), d.dead_letters.map((l) =>
    el("tr", { "data-seq": l.seq }, el("td", {}, l.seq), el("td", {}, fmtTime(l.time_ms)),
      el("td", {}, l.original_subject || l.subject), el("td", { class: "wrap" }, l.error || ""),
      el("td", {}, l.took_effect || ""),
      el("td", {}, el("button", { type: "button", class: "inspect", "data-seq": l.seq,
        onclick: () => inspectLetter(l.seq) }, "inspect")))));
}

async function inspectLetter(seq) {
  openLetter = seq;
  const box = $("#dead-letter");
  box.hidden = false;
  $("#replay-result").textContent = "";
  $("#dead-letter-seq").textContent = seq;
  try {
    const l = await getJSON("/api/dead_letter.json?seq=" + seq);
    fill($("#dead-letter-headers tbody"), Object.entries(l.headers).map(([k, v]) =>
      el("tr", { "data-header": k }, el("th", {}, k), el("td", { class: "wrap" }, v.join(", ")))));
    let payload = l.payload;
    try { payload = JSON.stringify(JSON.parse(l.payload), null, 2); } catch (_) { /* not JSON */ }
    $("#dead-letter-payload").textContent = payload + (l.payload_cut ? "\n… (cut)" : "");
    const button = $("#replay");
    button.disabled = !(l.allow_replay && l.replayable);
    $("#replay-note").textContent = !l.allow_replay
      ? "replay is off ([dashboard] allow_replay)"
      : l.replayable ? "" : "no original subject recorded: cannot replay";
  } catch (e) {
    $("#dead-letter-payload").textContent = "";
    $("#replay-result").replaceChildren(el("span", { class: "error" }, e.message));
  }
}

async function replayLetter() {
  if (openLetter === null) return;
  const seq = openLetter;
  $("#replay").disabled = true;
  try {
    const r = await getJSON("/api/dead_letter/replay?seq=" + seq,
      { method: "POST", headers: { "X-Switchyard-Dashboard": "replay" } });
    $("#replay-result").replaceChildren(el("span", { "data-replayed": seq },
      "replayed to " + r.subject + (r.duplicate ? " (already replayed before)" : "") +
      (r.deleted ? "; dead letter removed" : "; the dead letter could not be removed")));
  } catch (e) {
    $("#replay-result").replaceChildren(el("span", { class: "error" }, "replay failed: " + e.message));
    $("#replay").disabled = false;
  }
}

function taskFromHash() {
  const m = location.hash.match(/^#task=(.*)$/);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (_) { return m[1]; }
}

async function refreshTask() {
  const id = taskFromHash();
  const section = $("#task");
  section.hidden = id === null;
  if (id === null) return;
  $("#task-id").textContent = id;
  const view = $("#task-view");
  try {
    const t = await getJSON("/api/task.json?id=" + encodeURIComponent(id));
    const rows = Object.entries(t.record).map(([k, v]) => el("tr", {}, el("th", {}, k),
      el("td", { class: "wrap" }, /_at$|^last_/.test(k) && /^\d{12,}$/.test(v) ? v + " (" + fmtTime(Number(v)) + ")" : v)));
    const story = t.story && t.story.length
      ? el("ol", { id: "task-story" }, ...t.story.map(storyLine))
      : el("p", { class: "small", id: "task-story" }, "No story recorded (a task from before stories were kept, or past its retention).");
    view.replaceChildren(el("div", { "data-task": t.task_id, "data-state": t.state || "" },
      el("p", {}, "state ", pill(t.state || "unknown"), " ",
        t.wait && t.wait.detail ? "— " + t.wait.detail : "")),
      el("h3", {}, "Story"), story,
      el("h3", {}, "Record"), el("table", { id: "task-record" }, el("tbody", {}, ...rows)));
  } catch (e) {
    view.replaceChildren(el("p", { class: "error", "data-task-error": id }, e.message));
  }
}

function setStatus(ok, error) {
  const status = $("#status");
  if (ok) {
    lastOk = Date.now();
    status.className = "status live";
    status.textContent = "live · updated " + new Date(lastOk).toLocaleTimeString();
  } else {
    status.className = "status down";
    status.textContent = "unreachable" + (lastOk ? " · last update " + new Date(lastOk).toLocaleTimeString() : "") +
      " · " + (error && error.message ? error.message : "no answer");
  }
}

let polling = false;
async function refresh() {
  if (polling) return;
  polling = true;
  try {
    const [o, t] = await Promise.all([getJSON("/api/overview.json"), getJSON("/api/tasks.json?limit=50")]);
    serverNow = o.now_ms;
    renderFleet(o);
    renderQueue(o, t);
    renderThroughput(o);
    renderBudgets(o);
    await refreshDeadLetters();
    await refreshTask();
    setStatus(true);
  } catch (e) {
    setStatus(false, e);
  } finally {
    polling = false;
  }
}

$("#search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("#search").value.trim();
  if (id) location.hash = "task=" + encodeURIComponent(id);
});
$("#task-close").addEventListener("click", (event) => {
  event.preventDefault();
  history.replaceState(null, "", location.pathname);
  $("#task").hidden = true;
});
$("#replay").addEventListener("click", replayLetter);
window.addEventListener("hashchange", () => { refreshTask(); });
refresh();
setInterval(refresh, POLL_MS);

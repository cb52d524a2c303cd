"use strict";
// The spendgate dashboard: reads the admin API with the session cookie (same origin) and
// draws it. Every figure comes from the API as it stands; nothing is computed here but the
// layout. Text is always set with textContent (never parsed as HTML).

const UI_HEADER = { "x-spendgate-ui": "1" };
const COLORS = ["#0b5cad", "#bf8700", "#1a7f37", "#8250df", "#cf222e", "#0a7c86",
  "#6e7781", "#953800", "#4d2d9c", "#116329"];
const charts = {};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (init.method && init.method !== "GET") {
    init.headers = { ...UI_HEADER, "content-type": "application/json", ...(init.headers || {}) };
  }
  const answer = await fetch(path, init);
  if (answer.status === 401) { window.location.assign("/ui/login"); throw new ApiError(401, "signed out"); }
  const text = await answer.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!answer.ok) {
    const message = body && body.error ? body.error.message : `${answer.status} ${answer.statusText}`;
    throw new ApiError(answer.status, message);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function usd(text) {
  // "0.001750000" -> "$0.00175"; keeps at least two decimals, never rounds the API's figure.
  if (text === null || text === undefined) return "–";
  const negative = String(text).startsWith("-");
  const [whole, fraction = ""] = String(text).replace("-", "").split(".");
  const trimmed = fraction.replace(/0+$/, "").padEnd(2, "0");
  return `${negative ? "-" : ""}$${Number(whole).toLocaleString("en-US")}.${trimmed}`;
}

function percent(bp) { return bp === null || bp === undefined ? "–" : `${(bp / 100).toFixed(2)} %`; }
function count(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC") : "–"; }
function dollars(nanos) { return nanos / 1e9; }

function table(columns, rows, empty) {
  if (!rows.length) return el("p", { class: "note", text: empty });
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, text: c.title })));
  const body = rows.map((row) => el("tr", {}, columns.map((c) => {
    const value = c.value(row);
    return el("td", { class: c.num ? "num" : null }, value instanceof Node ? value : String(value));
  })));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

function fill(id, ...nodes) { const target = document.getElementById(id); target.replaceChildren(...nodes); }

function totals(id, pairs) {
  fill(id, ...pairs.map(([label, value]) => el("div", {}, el("dt", { text: label }), el("dd", { text: value }))));
}

function unavailable(id, error) {
  const text = error.status === 404
    ? "Not available on this gateway."
    : error.status === 403 ? `Not allowed for this login: ${error.message}` : `Could not load: ${error.message}`;
  fill(id, el("p", { class: "note", text }));
}

function chart(id, config) {
  if (charts[id]) charts[id].destroy();
  if (typeof Chart === "undefined") return;
  charts[id] = new Chart(document.getElementById(id), config);
}

function period() { return document.getElementById("period").value; }

// --------------------------------------------------------------------------- spend

async function loadGroups(groupBy, canvasId, tableId) {
  const data = await api(`/admin/usage?group_by=${groupBy}&period=${period()}&top=8`);
  const rows = data.top.slice();
  if (data.rest && data.rest.groups) rows.push({ group: `${data.rest.groups} more`, ...data.rest, rest: true });
  chart(canvasId, {
    type: "doughnut",
    data: {
      labels: rows.map((r) => r.group ?? "(none)"),
      datasets: [{ data: rows.map((r) => dollars(r.cost_nanos)), backgroundColor: COLORS }],
    },
    options: { maintainAspectRatio: false, animation: false, plugins: { legend: { position: "right" } } },
  });
  fill(tableId, table([
    { title: groupBy, value: (r) => r.group ?? "(none)" },
    { title: "Spend", num: true, value: (r) => usd(r.cost_usd) },
    { title: "Share", num: true, value: (r) => percent(r.share_bp) },
    { title: "Requests", num: true, value: (r) => count(r.requests) },
  ], rows, "No spend in this period."));
  return data;
}

async function loadSeries() {
  const by = document.getElementById("series-by").value;
  const bucket = ["today"].includes(period()) ? "hour" : "day";
  const note = document.getElementById("series-note");
  try {
    const data = await api(`/admin/usage?bucket=${bucket}&group_by=${by}&period=${period()}`);
    note.hidden = true;
    document.getElementById("series-chart").parentElement.hidden = false;
    const starts = [...new Set(data.series.map((p) => p.start))].sort();
    const groups = [...new Set(data.series.map((p) => p.group ?? "(none)"))];
    const cell = new Map(data.series.map((p) => [`${p.start}|${p.group ?? "(none)"}`, p]));
    chart("series-chart", {
      type: "bar",
      data: {
        labels: starts.map((s) => (bucket === "hour" ? s.slice(11, 16) : s.slice(0, 10))),
        datasets: groups.map((g, i) => ({
          label: g,
          backgroundColor: COLORS[i % COLORS.length],
          data: starts.map((s) => dollars((cell.get(`${s}|${g}`) || { cost_nanos: 0 }).cost_nanos)),
        })),
      },
      options: {
        maintainAspectRatio: false, animation: false,
        scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } },
      },
    });
    fill("series-table", table([
      { title: bucket === "hour" ? "Hour" : "Day", value: (p) => when(p.start) },
      { title: by, value: (p) => p.group ?? "(none)" },
      { title: "Spend", num: true, value: (p) => usd(p.cost_usd) },
      { title: "Requests", num: true, value: (p) => count(p.requests) },
    ], data.series, "No spend in this period."));
  } catch (error) {
    if (error.status !== 404 && error.status !== 400) throw error;
    note.textContent = "Spend over time needs a gateway with the usage series report.";
    note.hidden = false;
    document.getElementById("series-chart").parentElement.hidden = true;
  }
}

async function loadSpend() {
  const teams = await loadGroups("team", "team-chart", "team-table");
  await loadGroups("model", "model-chart", "model-table");
  const requests = teams.top.reduce((n, r) => n + r.requests, 0) + (teams.rest ? teams.rest.requests : 0);
  const blocked = teams.top.reduce((n, r) => n + r.blocked, 0) + (teams.rest ? teams.rest.blocked : 0);
  totals("totals", [
    ["Spend", usd(teams.total_cost_usd)],
    ["Requests", count(requests)],
    ["Refused before the call", count(blocked)],
    ["Since", when(teams.since)],
  ]);
  await loadSeries();
}

// --------------------------------------------------------------------------- budgets

function budgetBar(b) {
  const limit = Math.max(b.limit, 1);
  const width = (amount) => `${Math.min(100, (100 * amount) / limit).toFixed(2)}%`;
  const spent = el("span", { class: "spent", style: { left: "0", width: width(b.spent) } });
  const reserved = el("span", { class: "reserved", style: { left: width(b.spent), width: width(b.reserved) } });
  const parts = [spent, reserved];
  const forecast = b.forecast && b.forecast.projected;
  if (forecast !== undefined && forecast !== null) {
    parts.push(el("span", { class: "forecast", style: { left: "0", width: width(forecast) } }));
  }
  const label = `${b.display.spent} spent, ${b.display.reserved} reserved of ${b.display.limit}` +
    (forecast !== undefined && forecast !== null ? `, forecast ${b.forecast.display.projected} at period end` : "");
  return el("div", { class: "bar", role: "img", "aria-label": label, title: label }, parts);
}

async function setLimit(b) {
  const value = window.prompt(`New limit for ${b.name} (${b.unit === "usd" ? "dollars" : b.unit}):`, "");
  if (value === null || value.trim() === "") return;
  await act(`/admin/budgets/${encodeURIComponent(b.name)}/limit`, "PUT", { limit: value.trim(), expires_at: null },
    `Limit of ${b.name} set to ${value.trim()}.`);
}

async function resetBudget(b) {
  if (!window.confirm(`Forgive the spend of ${b.name} for ${b.member} in this window?`)) return;
  await act(`/admin/budgets/${encodeURIComponent(b.name)}/reset`, "POST", { member: b.member },
    `Spend of ${b.name} for ${b.member} reset.`);
}

async function loadBudgets() {
  const data = await api("/admin/budgets");
  const budgets = data.data.filter((b) => b.kind === "budget");
  fill("budget-list", table([
    { title: "Budget", value: (b) => b.name },
    { title: "Member", value: (b) => b.member },
    { title: "State", value: (b) => el("span", { class: `state ${b.state}`, text: b.state }) },
    { title: "Use", value: (b) => budgetBar(b) },
    { title: "Spent", num: true, value: (b) => b.display.spent },
    { title: "Limit", num: true, value: (b) => b.display.limit },
    { title: "Forecast", num: true, value: (b) => (b.forecast && b.forecast.display.projected ? b.forecast.display.projected : "–") },
    { title: "Cap reached", value: (b) => (b.forecast && b.forecast.cap_at ? when(b.forecast.cap_at) : "–") },
    { title: "Resets", value: (b) => when(b.resets_at) },
    { title: "Actions", value: (b) => el("span", {},
      el("button", { type: "button", class: "secondary", onclick: () => setLimit(b), text: "Set limit" }), " ",
      el("button", { type: "button", class: "secondary", onclick: () => resetBudget(b), text: "Reset" })) },
  ], budgets, "No budgets are configured."));
}

// --------------------------------------------------------------------------- spenders

async function loadSpenders() {
  const data = await api(`/admin/usage?group_by=user&period=${period()}&top=10`);
  const rows = data.top.map((r) => ({ ...r }));
  fill("spender-list",
    table([
      { title: "#", num: true, value: (r) => r.rank },
      { title: "User", value: (r) => r.group ?? "(none)" },
      { title: "Spend", num: true, value: (r) => usd(r.cost_usd) },
      { title: "Share of users' spend", num: true, value: (r) => percent(r.share_bp) },
      { title: "", value: (r) => el("div", { class: "bar", role: "img", "aria-label": `${percent(r.share_bp)} of users' spend` },
        el("span", { class: "spent", style: { left: "0", width: `${(r.share_bp / 100).toFixed(2)}%` } })) },
      { title: "Requests", num: true, value: (r) => count(r.requests) },
      { title: "Refused", num: true, value: (r) => count(r.blocked) },
    ], rows, "No user spent anything in this period."),
    data.services ? el("p", { class: "note", text: `Service keys (no user): ${usd(data.services.cost_usd)}, ${percent(data.services.share_bp)} of all spend.` }) : "");
}

// --------------------------------------------------------------------------- blocked

async function releaseLoop(loop) {
  await act(`/admin/loops/${encodeURIComponent(loop.id)}/release`, "POST", {}, `Loop ${loop.id} released.`);
}

async function loadBlocked() {
  const [blocks, loops, savings] = await Promise.all([
    api(`/admin/blocks?period=${period()}`), api("/admin/loops"), api(`/admin/savings?period=${period()}`),
  ]);
  totals("blocked-totals", [
    ["Refusals", count(blocks.blocked)],
    ["Distinct requests refused", count(blocks.requests)],
    ["Their likely cost", usd(blocks.estimate_usd)],
    ["Downgraded", count(savings.total.downgraded)],
    ["Loops blocked now", count(loops.data.length)],
  ]);
  fill("block-list", table([
    { title: "What refused", value: (b) => b.name },
    { title: "Refusals", num: true, value: (b) => count(b.blocked) },
    { title: "Requests", num: true, value: (b) => count(b.requests) },
    { title: "Worst case", num: true, value: (b) => usd(b.requests_worst_case_usd) },
    { title: "Likely cost", num: true, value: (b) => usd(b.estimate_usd) },
    { title: "Told to retry", num: true, value: (b) => count(b.retryable) },
  ], blocks.data || [], "Nothing was refused in this period."));
  fill("loop-list", table([
    { title: "Key", value: (l) => l.key_id },
    { title: "Model", value: (l) => l.model },
    { title: "Strikes", num: true, value: (l) => count(l.strikes) },
    { title: "Blocked until", value: (l) => when(l.blocked_until) },
    { title: "", value: (l) => el("button", { type: "button", class: "secondary", onclick: () => releaseLoop(l), text: "Release" }) },
  ], loops.data, "No loop is blocked."));
}

async function loadSavings() {
  const data = await api(`/admin/savings?period=${period()}`);
  totals("savings-totals", [
    ["Saved by routing", usd(data.total.saved_usd)],
    ["Share of what it would have cost", percent(data.total.saved_bp)],
    ["Requests rerouted", count(data.total.aliased + data.total.rewritten + data.total.downgraded)],
    ["Fell back", count(data.total.fell_back)],
  ]);
  fill("savings-list", table([
    { title: "Team", value: (s) => s.group ?? "(none)" },
    { title: "Cost", num: true, value: (s) => usd(s.cost_usd) },
    { title: "Would have cost", num: true, value: (s) => usd(s.counterfactual_usd) },
    { title: "Saved", num: true, value: (s) => usd(s.saved_usd) },
    { title: "Downgraded", num: true, value: (s) => count(s.downgraded) },
  ], data.data, "No routed requests in this period."));
}

// --------------------------------------------------------------------------- keys

async function revokeKey(key) {
  if (!window.confirm(`Revoke ${key.name} (${key.hint})? Its secret stops working at once.`)) return;
  await act(`/admin/keys/${encodeURIComponent(key.id)}/revoke`, "POST", {}, `Key ${key.name} revoked.`);
}

async function loadKeys() {
  const data = await api("/admin/keys");
  fill("key-list", table([
    { title: "Name", value: (k) => k.name },
    { title: "Key", value: (k) => el("code", { text: k.hint }) },
    { title: "Team", value: (k) => k.team ?? "–" },
    { title: "User / service", value: (k) => k.user ?? k.service ?? "–" },
    { title: "Budget", num: true, value: (k) => (k.budget_usd ? `${usd(k.budget_usd)} ${k.budget_period}` : "–") },
    { title: "Created", value: (k) => when(k.created_at) },
    { title: "", value: (k) => el("button", { type: "button", class: "danger", onclick: () => revokeKey(k), text: "Revoke", "aria-label": `Revoke ${k.name}` }) },
  ], data.data, "No keys yet."));
}

async function createKey(event) {
  event.preventDefault();
  const form = event.target;
  const body = {};
  for (const [name, value] of new FormData(form).entries()) if (String(value).trim()) body[name] = String(value).trim();
  const shown = document.getElementById("key-created");
  try {
    const key = await api("/admin/keys", { method: "POST", body: JSON.stringify(body) });
    shown.replaceChildren("Key created. Copy its secret now, it is shown only once: ", el("code", { id: "new-secret", text: key.key }));
    shown.className = "";
    form.reset();
    await loadKeys();
  } catch (error) {
    shown.textContent = `Not created: ${error.message}`;
    shown.className = "error";
  }
  shown.hidden = false;
}

// --------------------------------------------------------------------------- logs

async function loadAlerts() {
  try {
    const data = await api("/admin/alerts?limit=200");
    fill("alert-list", table([
      { title: "When", value: (a) => when(a.created_at) },
      { title: "Alert", value: (a) => a.title },
      { title: "Kind", value: (a) => a.kind },
      { title: "Channel", value: (a) => a.channel },
      { title: "Status", value: (a) => el("span", { class: `state ${a.status === "failed" ? "exhausted" : a.status === "delivered" ? "ok" : "soft"}`, text: a.status }) },
      { title: "Attempts", num: true, value: (a) => count(a.attempts) },
      { title: "Last error", value: (a) => a.last_error || "–" },
    ], data.data, data.enabled ? "No alerts yet." : "Alerts are not configured on this gateway."));
  } catch (error) { unavailable("alert-list", error); }
}

function change(entry) {
  const show = (value) => (value === null || value === undefined ? "–" : JSON.stringify(value));
  return el("details", {}, el("summary", { text: "before → after" }),
    el("pre", { text: `${show(entry.before)}\n→ ${show(entry.after)}` }));
}

async function loadAudit() {
  try {
    const data = await api("/admin/audit?limit=200");
    fill("audit-list", table([
      { title: "When", value: (e) => when(e.at) },
      { title: "Who", value: (e) => `${e.actor} (${e.role})` },
      { title: "What", value: (e) => e.action },
      { title: "Target", value: (e) => e.target || "–" },
      { title: "Team", value: (e) => e.team || "–" },
      { title: "Change", value: (e) => change(e) },
    ], data.data || [], "No changes recorded."));
  } catch (error) { unavailable("audit-list", error); }
}

// --------------------------------------------------------------------------- wiring

async function act(path, method, body, done) {
  const status = document.getElementById("status");
  try {
    await api(path, { method, body: JSON.stringify(body) });
    status.textContent = done;
    await refresh();
  } catch (error) {
    status.textContent = `Failed: ${error.message}`;
  }
}

const SECTIONS = [
  ["totals", loadSpend], ["budget-list", loadBudgets], ["spender-list", loadSpenders],
  ["block-list", loadBlocked], ["savings-list", loadSavings], ["key-list", loadKeys],
  ["alert-list", loadAlerts], ["audit-list", loadAudit],
];

async function refresh() {
  document.body.dataset.loaded = "false";
  await Promise.all(SECTIONS.map(([id, load]) => load().catch((error) => unavailable(id, error))));
  document.body.dataset.loaded = "true";
}

const ROLES = { org_admin: "org admin", team_admin: "team admin", viewer: "viewer" };

async function loadWhoami() {
  const me = await api("/ui/whoami");
  document.getElementById("whoami").textContent =
    `${me.name} · ${ROLES[me.role] || me.role}${me.team ? ` of ${me.team}` : ""}`;
  document.body.dataset.role = me.role; // a viewer's page hides what it may not change
}

document.addEventListener("DOMContentLoaded", () => {
  loadWhoami().catch(() => {});
  document.getElementById("period").addEventListener("change", refresh);
  document.getElementById("series-by").addEventListener("change", () => loadSeries().catch((e) => unavailable("series-table", e)));
  document.getElementById("refresh").addEventListener("click", refresh);
  document.getElementById("key-form").addEventListener("submit", createKey);
  refresh();
});

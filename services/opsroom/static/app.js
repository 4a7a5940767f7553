// HybridPool ops room: a small page over the service's own API; live values arrive by server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { page: 1, pages: 1, query: "", stream: null, act: { id: null, t: [], req: [], del: [] } };
const fmt = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const time = (iso) => (iso ? new Date(iso).toISOString().slice(0, 19).replace("T", " ") + "Z" : "–");

async function call(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) } });
  if (response.status === 401 && path !== "/api/login") { showLogin(); throw new Error("login required"); }
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error((body && body.detail) || response.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function showLogin() {
  if (state.stream) { state.stream.close(); state.stream = null; }
  $("app").hidden = true;
  $("login").hidden = false;
}

async function showApp(me) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = me.principal_id;
  connect();
  route();
}

function connect() {
  if (state.stream) return;
  const stream = new EventSource("/api/stream");
  stream.addEventListener("overview", (e) => renderOverview(JSON.parse(e.data)));
  stream.addEventListener("activation", (e) => {
    $("act-id").textContent = JSON.parse(e.data).activation_id;
  });
  stream.onopen = () => $("live-dot").classList.add("on");
  stream.onerror = () => $("live-dot").classList.remove("on");
  state.stream = stream;
}

function renderOverview(o) {
  const f = o.fleet;
  $("kpi-online").textContent = `${f.online} / ${f.sites_total}`;
  $("kpi-stale").textContent = f.stale;
  $("kpi-offline").textContent = f.offline;
  $("kpi-excluded").textContent = f.excluded;
  $("kpi-hp").textContent = f.hp_running;
  $("kpi-gas").textContent = f.on_gas;
  $("kpi-power").textContent = fmt(f.pool_power_kw, 1);
  $("kpi-up").textContent = fmt(f.up_available_kw, 1);
  $("kpi-down").textContent = fmt(f.down_available_kw, 1);
  $("kpi-up-committed").textContent = fmt(o.committed_up_mw, 1);
  $("kpi-down-committed").textContent = fmt(o.committed_down_mw, 1);
  renderAlarms(o.alarms);
  renderActivation(o.activation);
}

function renderAlarms(alarms) {
  const list = $("alarms");
  list.replaceChildren();
  if (!alarms.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "none"; list.appendChild(li); }
  for (const a of alarms) {
    const li = document.createElement("li");
    li.className = a.cleared_at ? "" : "open";
    li.textContent = `${a.kind}: ${a.message} `;
    if (!a.acknowledged_at) {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.className = "secondary";
      b.onclick = () => call(`/api/alarms/${encodeURIComponent(a.id)}/ack`, { method: "POST" });
      li.appendChild(b);
    } else {
      li.appendChild(document.createTextNode(`(ack. ${a.acknowledged_by})`));
    }
    list.appendChild(li);
  }
}

async function renderActivation(a) {
  if (!a) return;
  if (state.act.id !== a.activation_id) {
    if (state.act.loading === a.activation_id) return;
    state.act.loading = a.activation_id;
    let detail;
    try { detail = await call(`/api/activations/${encodeURIComponent(a.activation_id)}`); }
    finally { state.act.loading = null; }
    state.act = { id: a.activation_id, t: detail.curve.map((p) => p.t_s), req: detail.curve.map((p) => p.requested_kw),
      del: detail.curve.map((p) => p.delivered_kw) };
  } else if (a.live && state.act.t[state.act.t.length - 1] !== a.t_s) {
    state.act.t.push(a.t_s); state.act.req.push(a.requested_kw); state.act.del.push(a.delivered_kw);
  }
  $("act-id").textContent = a.activation_id;
  $("act-verdict").textContent = a.verdict;
  $("act-verdict").className = `badge ${a.verdict}`;
  $("act-line").textContent = `${a.direction} ${a.product} · requested ${fmt(a.requested_kw)} kW · delivered `
    + `${fmt(a.delivered_kw, 1)} kW (${a.measured_by}) · t50 ${fmt(a.t50_s, 1)} s · t100 ${fmt(a.t100_s, 1)} s${a.at_risk ? " · AT RISK" : ""}`;
  $("act-line").dataset.delivered = a.delivered_kw;
  plotCurve("act-chart", state.act.t, state.act.req, state.act.del);
}

function plotCurve(id, t, req, del) {
  if (!window.Plotly) return;
  // Plotly.react redraws only for new array references: hand it copies.
  Plotly.react(id, [
    { x: t.slice(), y: req.slice(), name: "requested kW", line: { shape: "hv", color: "#0b6e99" } },
    { x: t.slice(), y: del.slice(), name: "delivered kW", line: { color: "#e07b00" } },
  ], { margin: { t: 10, r: 10, b: 40, l: 50 }, xaxis: { title: { text: "s since start" } },
    yaxis: { title: { text: "kW" } }, legend: { orientation: "h" } }, { displayModeBar: false, responsive: true });
}

async function loadPrices() {
  const p = await call(`/api/prices?area=${$("price-area").value}`);
  const traces = Object.entries(p.curves).map(([name, pts]) => ({
    x: pts.map((q) => q[0]), y: pts.map((q) => q[1]), name, line: { shape: "hv" },
    yaxis: name.startsWith("reserve") ? "y2" : "y" }));
  Plotly.react("price-chart", traces, { margin: { t: 10, r: 60, b: 40, l: 60 }, yaxis: { title: { text: "EUR/MWh" } },
    yaxis2: { title: { text: "EUR/MW/h" }, overlaying: "y", side: "right" }, legend: { orientation: "h" } },
  { displayModeBar: false, responsive: true });
  const h = p.balance_histogram;
  const mids = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
  const shapes = p.spot_now_eur_per_mwh === null ? [] : [{ type: "line", x0: p.spot_now_eur_per_mwh,
    x1: p.spot_now_eur_per_mwh, y0: 0, y1: 1, yref: "paper", line: { color: "#b3261e", dash: "dash" } }];
  Plotly.react("balance-chart", [{ type: "bar", x: mids, y: h.counts, name: "sites" }],
    { margin: { t: 10, r: 10, b: 40, l: 50 }, xaxis: { title: { text: "balance price EUR/MWh" } }, shapes },
    { displayModeBar: false, responsive: true });
  $("balance-line").textContent = `${p.balance_sites} sites · spot now ${fmt(p.spot_now_eur_per_mwh, 1)} EUR/MWh · `
    + `HP cheaper than gas at ${p.sites_hp_cheaper} sites`;
}

async function loadBids() {
  const b = await call("/api/bids");
  const bp = b.bidding_plan;
  $("bidding-line").textContent = bp.available
    ? `Bidding: plan ${bp.plan_id} ${bp.status}${bp.fallback ? " (FALLBACK)" : ""}${bp.reason ? ` — ${bp.reason}` : ""} · `
      + `${bp.online_sites}/${bp.sites} sites online · ${bp.capacity_bids.length} capacity bids · expected reserve `
      + `revenue ${fmt(bp.reserve_revenue_eur, 2)} EUR · sources ${JSON.stringify(bp.sources)}`
    : `Bidding's plan status unavailable: ${bp.why}`;
  if (b.plan) {
    $("plan-id").textContent = b.plan.plan_id;
    $("plan-line").textContent = `${b.plan.sites} sites planned · ${b.plan.fallback_sites} on the fallback plan`;
    Plotly.react("plan-chart", [
      { x: b.plan.quarters, y: b.plan.expected_kw, name: "expected HP kW", line: { shape: "hv" } },
      { x: b.plan.quarters, y: b.plan.hp_on, name: "HPs on", yaxis: "y2", line: { shape: "hv", dash: "dot" } },
    ], { margin: { t: 10, r: 50, b: 40, l: 50 }, yaxis2: { overlaying: "y", side: "right" }, legend: { orientation: "h" } },
    { displayModeBar: false, responsive: true });
  } else {
    $("plan-line").textContent = "no plan received yet";
  }
  $("bids-summary").textContent = `${b.accepted} accepted · ${b.rejected} rejected · ${b.pending} pending · `
    + `capacity revenue so far ${fmt(b.revenue_so_far_eur, 2)} EUR`;
  const body = $("bids-table");
  body.replaceChildren();
  for (const bid of b.bids) {
    const tr = document.createElement("tr");
    cell(tr, bid.bid_id, "mono"); cell(tr, `${time(bid.interval_start)} +${bid.interval_minutes}m`);
    cell(tr, bid.product); cell(tr, bid.direction); cell(tr, fmt(bid.capacity_mw, 1));
    cell(tr, fmt(bid.price_eur_per_mw_per_h ?? bid.price_eur_per_mwh, 2));
    cell(tr, bid.result ? (bid.result.accepted ? `accepted ${fmt(bid.result.accepted_mw, 1)} MW`
      : bid.result.refused_because ? `refused: ${bid.result.refused_because}` : "rejected") : "pending");
    body.appendChild(tr);
  }
  $("bids-gaps").replaceChildren(...b.hours_without_bid.slice(0, 48).map((g) => {
    const li = document.createElement("li"); li.textContent = `${time(g.start)} – ${time(g.end)}: ${g.reason}`; return li; }));
}

async function loadActivations() {
  const data = await call("/api/activations");
  const body = $("acts-table");
  body.replaceChildren();
  for (const a of data.activations) {
    const tr = document.createElement("tr");
    cell(tr, a.activation_id, "mono"); cell(tr, time(a.start)); cell(tr, a.product); cell(tr, a.direction);
    cell(tr, fmt(a.power_mw, 1)); cell(tr, fmt(a.t50_s, 1)); cell(tr, fmt(a.t100_s, 1));
    cell(tr, a.verdict, `badge ${a.verdict}`);
    tr.onclick = () => showActivation(a.activation_id);
    body.appendChild(tr);
  }
}

async function showActivation(id) {
  const a = await call(`/api/activations/${encodeURIComponent(id)}`);
  $("act-detail").hidden = false;
  $("ad-id").textContent = a.activation_id;
  $("ad-verdict").textContent = a.verdict;
  $("ad-verdict").className = `badge ${a.verdict}`;
  $("ad-line").textContent = `${a.direction} ${a.product} ${fmt(a.power_mw, 1)} MW · t50 ${fmt(a.t50_s, 1)} s · `
    + `t100 ${fmt(a.t100_s, 1)} s (deadline ${fmt(a.full_deadline_s)} s) ${a.verdict_reason}`;
  const d = a.dispatch;
  $("ad-dispatch").textContent = d
    ? `Dispatch: ${d.verdict} (${(d.reasons || []).join("; ") || "all checkpoints met"}) · delivered share `
      + `${fmt(100 * d.delivered_share)} % · ${d.units_dispatched} sites dispatched, ${d.units_replaced} replaced, `
      + `${d.units_unresponsive} unresponsive`
    : "Dispatch report not available: response measured as pool power against the baseline.";
  $("ad-used").textContent = `${a.sites_used_count} (${a.sites_used.join(", ") || "none visible"})`;
  $("ad-failed").textContent = `${a.sites_failed_count} (${a.sites_failed.join(", ") || "none visible"})`;
  plotCurve("ad-chart", a.curve.map((p) => p.t_s), a.curve.map((p) => p.requested_kw), a.curve.map((p) => p.delivered_kw));
}

async function loadSites() {
  $("sites-error").textContent = "";
  const q = encodeURIComponent(state.query);
  const data = await call(`/api/sites?q=${q}&page=${state.page}&page_size=25`);
  state.pages = data.pages;
  state.page = data.page;
  $("sites-count").textContent = `${data.total} sites`;
  $("page-info").textContent = `page ${data.page} of ${data.pages}`;
  const body = $("sites-table");
  body.replaceChildren();
  for (const s of data.sites) {
    const tr = document.createElement("tr");
    tr.dataset.site = s.site_id;
    cell(tr, s.site_id, "mono"); cell(tr, s.make_model); cell(tr, s.area); cell(tr, s.status);
    cell(tr, s.hp_running === null ? "–" : s.hp_running ? "HP" : s.on_gas ? "gas" : "idle");
    cell(tr, fmt(s.electric_power_kw, 2)); cell(tr, s.lockout_remaining_s ? `${fmt(s.lockout_remaining_s / 60, 1)} min` : "–");
    cell(tr, `${fmt(s.reaction.median_t50_s, 1)} s (${s.reaction.commands} cmds, ${s.reaction.failures} failed)`);
    cell(tr, fmt(s.cop, 2)); cell(tr, fmt(s.balance_price_eur_per_mwh, 1));
    const td = cell(tr, s.excluded ? "excluded " : "");
    const b = document.createElement("button");
    b.textContent = s.excluded ? "Include" : "Exclude";
    b.className = "secondary";
    b.dataset.action = s.excluded ? "include" : "exclude";
    b.onclick = async (e) => {
      e.stopPropagation();
      await call(`/api/sites/${encodeURIComponent(s.site_id)}/${b.dataset.action}`, { method: "POST" });
      loadSites();
    };
    td.appendChild(b);
    tr.onclick = () => showSite(s.site_id);
    body.appendChild(tr);
  }
}

async function showSite(id) {
  try {
    const s = await call(`/api/sites/${encodeURIComponent(id)}`);
    $("site-detail").hidden = false;
    $("sd-id").textContent = s.site_id;
    const live = s.live_state;
    $("sd-line").textContent = `${s.make_model} · ${s.master.location.address} · ${s.status} · `
      + (live ? `${fmt(live.electric_power_kw, 2)} kW, indoor ${fmt(live.indoor_temp_c, 1)} °C, outdoor ${fmt(live.outdoor_temp_c, 1)} °C` : "no live data")
      + (s.registry_status ? ` · gateway ${s.registry_status.gateway}, heat pump ${s.registry_status.heat_pump}, maintenance ${s.registry_status.maintenance}` : " · no HP-Hub status reported");
    const x = s.quarters.map((q) => q.interval_start);
    Plotly.react("sd-chart", [
      { x, y: s.quarters.map((q) => q.mean_power_kw), name: "mean power kW" },
      { x, y: s.quarters.map((q) => q.outdoor_temp_mean_c), name: "outdoor °C", yaxis: "y2" },
      { x, y: s.quarters.map((q) => q.cop_measured), name: "COP", yaxis: "y2" },
    ], { margin: { t: 10, r: 50, b: 40, l: 50 }, yaxis2: { overlaying: "y", side: "right" }, legend: { orientation: "h" } },
    { displayModeBar: false, responsive: true });
  } catch (err) {
    $("site-detail").hidden = true;
    $("sites-error").textContent = err.message;
  }
}

async function loadAudit() {
  const data = await call("/api/audit");
  $("audit-chain").textContent = data.chain_ok ? "chain intact" : `chain broken at ${data.first_bad_seq}`;
  $("audit-chain").className = `badge ${data.chain_ok ? "ok" : "bad"}`;
  const body = $("audit-table");
  body.replaceChildren();
  for (const r of data.records) {
    const tr = document.createElement("tr");
    cell(tr, r.seq); cell(tr, time(r.recorded_at)); cell(tr, r.actor_id); cell(tr, r.action);
    cell(tr, r.site_id || ""); cell(tr, r.outcome); cell(tr, r.detail);
    body.appendChild(tr);
  }
}

const loaders = { overview: null, prices: loadPrices, bids: loadBids, activations: loadActivations, sites: loadSites, audit: loadAudit };

function route() {
  const view = (location.hash || "#overview").slice(1);
  for (const name of Object.keys(loaders)) {
    $(`view-${name}`).hidden = name !== view;
  }
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  if (loaders[view]) loaders[view]().catch((err) => console.error(err));
}

function wire() {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    try {
      const me = await call("/api/login", { method: "POST", body: JSON.stringify({ username: $("username").value, password: $("password").value }) });
      showApp(me);
    } catch (err) { $("login-error").textContent = err.message; }
  });
  $("logout").onclick = async () => { await call("/api/logout", { method: "POST" }); showLogin(); };
  $("test-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { direction: $("test-direction").value, power_mw: Number($("test-mw").value), duration_s: Number($("test-s").value) };
    try { $("test-result").textContent = `started ${(await call("/api/test-activation", { method: "POST", body: JSON.stringify(body) })).activation_id}`; }
    catch (err) { $("test-result").textContent = err.message; }
  });
  let timer = null;
  $("site-search").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.query = e.target.value; state.page = 1; loadSites(); }, 250);
  });
  $("prev-page").onclick = () => { if (state.page > 1) { state.page -= 1; loadSites(); } };
  $("next-page").onclick = () => { if (state.page < state.pages) { state.page += 1; loadSites(); } };
  $("price-area").onchange = loadPrices;
  window.addEventListener("hashchange", route);
}

window.addEventListener("DOMContentLoaded", async () => {
  wire();
  try { showApp(await call("/api/me")); } catch { showLogin(); }
});

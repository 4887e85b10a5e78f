// The gossipmesh dashboard: polls this agent's admin API and redraws. Read-only, no libraries.
// Every value from the API is put in the page as text (textContent), never as HTML: a service or
// route name is whatever an operator or a peer wrote, and must not become markup.
"use strict";

const TOKEN_KEY = "gossipmesh.admin-token";
const FAST_MS = 2000; // members, services, traffic
const SLOW_MS = 10000; // config history and conflicts
const WINDOW_S = 10; // the traffic window, as `gossipmesh stat` by default
const HISTORY_KEYS = 30; // keys whose history is shown (routes, services, policies first)
const HISTORY_PER_KEY = 3;

// A token given as /ui/#token=... moves to this tab's sessionStorage and out of the address bar,
// at load and when the fragment changes in an open tab.
function takeToken() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}
takeToken();
window.addEventListener("hashchange", takeToken);

class Unauthorized extends Error {}

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (r.status === 401) throw new Unauthorized(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  }
  return node;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

const pct = (x) => (x === null || x === undefined ? "-" : (x * 100).toFixed(1) + "%");
const ms = (x) => (x === null || x === undefined ? "-" : x.toFixed(1));
const num = (x) => el("td", { class: "num" }, x);
const when = (wallMs) => (wallMs ? new Date(wallMs).toLocaleTimeString() : "-");

function showError(message) {
  const box = document.getElementById("error");
  box.hidden = !message;
  box.textContent = message || "";
}

function drawMembers(members) {
  document.getElementById("members-count").textContent =
    `${members.filter((m) => m.state === "alive").length} alive of ${members.length}`;
  fill("members", members.map((m) =>
    el("tr", { "data-member": m.name, "data-state": m.state },
      el("td", {}, m.name), el("td", {}, m.address),
      el("td", { class: "state-" + m.state }, m.state), num(m.incarnation))));
}

function drawServices(rows) {
  rows = [...rows].sort((a, b) => (a.service + a.node).localeCompare(b.service + b.node));
  fill("services", rows.map((r) =>
    el("tr", { "data-service": r.service, "data-node": r.node, "data-health": r.health },
      el("td", {}, r.service), el("td", {}, r.node), el("td", {}, `${r.address}:${r.port}`),
      el("td", {}, (r.tags || []).join(",")),
      el("td", { class: "health-" + r.health }, r.health),
      el("td", {}, r.routable ? "yes" : "no" + (r.ejected ? " (ejected)" : "")))));
}

function drawStats(stats) {
  const win = `last ${stats.window_s} s, from ${stats.nodes.length} agent(s)` +
    (stats.unreachable.length ? `; unreachable: ${stats.unreachable.join(", ")}` : "");
  document.getElementById("stats-window").textContent = win;
  document.getElementById("denials-window").textContent = `last ${stats.window_s} s`;
  const rows = [];
  for (const s of stats.services.filter((x) => x.direction === "outbound")) {
    rows.push(el("tr", { class: "total", "data-service": s.service, "data-requests": s.requests,
                         "data-success": s.success_rate },
      el("td", {}, s.service), el("td", {}, ""), el("td", {}, ""), num(pct(s.success_rate)),
      num(s.rps.toFixed(2)), num(ms(s.p50_ms)), num(ms(s.p95_ms)), num(ms(s.p99_ms)),
      num(s.requests)));
    for (const d of stats.destinations) {
      if (d.direction !== "outbound" || d.service !== s.service) continue;
      rows.push(el("tr", { class: "sub", "data-service": s.service, "data-destination": d.destination,
                           "data-requests": d.requests, "data-share": d.share },
        el("td", {}, s.service), el("td", {}, d.destination || "(none)"), num(pct(d.share)),
        num(pct(d.success_rate)), num(d.rps.toFixed(2)), num(ms(d.p50_ms)), num(ms(d.p95_ms)),
        num(ms(d.p99_ms)), num(d.requests)));
    }
  }
  fill("stats", rows);
  const routeRows = [];
  for (const r of stats.routes) {
    r.destinations.forEach((d, i) => {
      const bar = el("div", { class: "bar" }, el("div", { class: "configured" }), el("div", { class: "observed" }));
      bar.children[0].style.width = ((d.configured_share || 0) * 100).toFixed(1) + "%";
      bar.children[1].style.width = ((d.observed_share || 0) * 100).toFixed(1) + "%";
      routeRows.push(el("tr", { "data-route": r.route, "data-destination": d.destination,
                                "data-configured": d.configured_share, "data-observed": d.observed_share,
                                "data-requests": d.requests },
        el("td", {}, i === 0 ? r.route : ""), el("td", {}, d.destination), num(d.weight),
        num(pct(d.configured_share)), num(pct(d.observed_share)), num(d.requests), el("td", {}, bar)));
    });
  }
  fill("routes", routeRows);
  fill("denials", stats.denied.map((d) =>
    el("tr", { "data-service": d.service, "data-policy": d.policy, "data-requests": d.requests },
      el("td", {}, d.service), el("td", {}, d.policy), num(d.requests))));
}

function drawConflicts(data) {
  fill("conflicts", data.conflicts.map((c) =>
    el("tr", { "data-key": c.key },
      el("td", {}, c.key), num(c.siblings.length), el("td", {}, c.winner.writer))));
}

function drawHistory(perKey) {
  const rows = [];
  for (const [key, versions] of perKey) {
    versions.slice(-HISTORY_PER_KEY).reverse().forEach((v, i) => {
      const signer = v.signer ? (v.signer.name || (v.signer.fingerprint || "").slice(0, 16)) : "";
      rows.push(el("tr", { "data-key": key },
        el("td", {}, i === 0 ? key : ""), el("td", {}, when(v.hlc && v.hlc.wall_ms)),
        el("td", {}, v.writer), el("td", {}, String(signer).slice(0, 40)),
        el("td", {}, v.deleted ? "deleted" : v.current ? "current" : "replaced")));
    });
  }
  fill("history", rows);
}

async function fastRound() {
  const [self, members, services, stats] = await Promise.allSettled([
    api("/v1/self"), api("/v1/members"), api("/v1/services"), api(`/v1/stats?window_s=${WINDOW_S}`),
  ]);
  const results = [self, members, services, stats];
  if (results.some((r) => r.status === "rejected" && r.reason instanceof Unauthorized)) {
    document.getElementById("login").hidden = false;
  }
  if (self.status === "fulfilled") {
    const s = self.value;
    document.getElementById("agent").textContent =
      `agent ${s.name} · cluster ${s.cluster} · ${s.version || ""}`;
    document.getElementById("agent").dataset.agent = s.name;
  }
  if (members.status === "fulfilled") drawMembers(members.value);
  if (services.status === "fulfilled") drawServices(services.value);
  if (stats.status === "fulfilled") drawStats(stats.value);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  showError(failed.length ? "not updated: " + failed.join("; ") : "");
  const stamp = document.getElementById("updated");
  stamp.textContent = "updated " + new Date().toLocaleTimeString();
  stamp.dataset.round = String(Number(stamp.dataset.round || 0) + 1);
}

async function slowRound() {
  try {
    drawConflicts(await api("/v1/config-conflicts"));
    const config = await api("/v1/config");
    const order = ["route/", "service/", "policy/"];
    const rank = (k) => { const i = order.findIndex((p) => k.startsWith(p)); return i < 0 ? order.length : i; };
    const keys = Object.keys(config.entities).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const perKey = [];
    for (const key of keys.slice(0, HISTORY_KEYS)) {
      const h = await api("/v1/config-history/" + key.split("/").map(encodeURIComponent).join("/"));
      perKey.push([key, h.versions]);
    }
    drawHistory(perKey);
  } catch (e) {
    if (e instanceof Unauthorized) document.getElementById("login").hidden = false;
    // a replica-less agent (404) has no config to show: leave the tables empty
  }
}

function loop(fn, everyMs) {
  const tick = async () => {
    try { await fn(); } catch (e) { showError(String(e)); }
    setTimeout(tick, everyMs);
  };
  tick();
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = document.getElementById("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  document.getElementById("login").hidden = true;
  document.getElementById("token").value = "";
});

loop(fastRound, FAST_MS);
loop(slowRound, SLOW_MS);

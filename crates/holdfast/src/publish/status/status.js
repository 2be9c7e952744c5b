// The Holdfast status page: reads /status/events (one JSON snapshot a second) and shows it.
// Plain DOM and SVG; every value from the server is set as text, never as markup.
"use strict";

const POINTS = 120;
const history = { published: [], delivered: [] };
let source = null;
let wait = 5000;

function $(id) {
  return document.getElementById(id);
}

function text(id, value) {
  $(id).textContent = String(value);
}

function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60, s = secs % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

function row(tbody, cells, cls) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c === null || c === undefined ? "–" : String(c);
    tr.appendChild(td);
  }
  if (cls) tr.className = cls;
  tbody.appendChild(tr);
}

function fill(id, rows, empty) {
  const tbody = $(id);
  tbody.replaceChildren();
  if (rows.length === 0) {
    row(tbody, [empty]);
    tbody.firstChild.firstChild.colSpan = tbody.parentNode.tHead.rows[0].cells.length;
    return;
  }
  for (const r of rows) row(tbody, r.cells, r.cls);
}

function badge(id, label, good) {
  const el = $(id);
  el.textContent = label;
  el.className = "badge " + (good ? "good" : "bad");
}

function chart(rates) {
  if (rates) {
    for (const k of ["published", "delivered"]) {
      history[k].push(rates[k]);
      if (history[k].length > POINTS) history[k].shift();
    }
    text("published-rate", rates.published + "/s");
    text("delivered-rate", rates.delivered + "/s");
  }
  const peak = Math.max(1, ...history.published, ...history.delivered);
  text("chart-peak", Math.round(peak * 100) / 100);
  for (const k of ["published", "delivered"]) {
    const pts = history[k].map((v, i) => {
      const x = (600 * (POINTS - history[k].length + i)) / (POINTS - 1);
      const y = 118 - (116 * v) / peak;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    $("line-" + k).setAttribute("points", pts.join(" "));
  }
}

function render(s) {
  text("instance", s.instance);
  text("version", "v" + s.version);
  text("uptime", duration(s.uptime_secs));
  badge("ready", s.draining ? "draining" : s.ready ? "ready" : "not ready", s.ready);
  const warnings = $("warnings");
  warnings.replaceChildren(...s.warnings.map((w) => {
    const p = document.createElement("p");
    p.textContent = "Warning: " + w;
    return p;
  }));
  warnings.hidden = s.warnings.length === 0;
  const held = s.connections.held;
  text("clients", s.connections.clients);
  text("held-total", Object.values(held).reduce((a, b) => a + b, 0));
  text("channels", s.channels);
  text("subscriptions", s.subscriptions.total);
  text("published", s.totals.published);
  text("delivered", s.totals.delivered);
  text("dropped", s.totals.dropped);
  chart(s.rates);
  fill("transports", [
    { cells: ["long-poll", held["long-poll"], s.subscriptions["long-poll"]] },
    { cells: ["stream / SSE", held.stream, s.subscriptions.stream] },
    { cells: ["WebSocket", held.websocket, s.subscriptions.websocket] },
    { cells: ["WebSocket-over-HTTP", held["ws-over-http"], null] },
  ]);
  fill("busiest", s.busiest.map((b) => ({ cells: [b.channel, b.subscribers] })),
    "no subscribers");
  fill("origins", s.origins.map((o) => ({
    cells: [o.target, o.recent_requests, o.recent_errors, `${o.requests} (${o.errors} errors)`,
      o.last_status,
      o.last_error === null ? null : `${o.last_error} (${duration(o.last_error_secs_ago)} ago)`],
    cls: o.recent_errors > 0 ? "bad-text" : "",
  })), "no origin requests yet");
  text("origins-untracked", s.origins_untracked > 0
    ? `${s.origins_untracked} requests to targets beyond the first 256 are not shown.` : "");
  if (s.cluster) {
    text("cluster-mode", "Cluster mode: this instance's Redis servers. " +
      "Other instances are not listed: they share only Redis, which keeps no membership.");
    fill("cluster", s.cluster.redis.map((r) => ({
      cells: [r.addr, r.connected ? "connected" : "disconnected", r.subscriptions, r.reconnects,
        r.received],
      cls: r.connected ? "" : "bad-text",
    })));
  } else {
    text("cluster-mode", "Single instance: no cluster bus is configured.");
    fill("cluster", [], "none");
  }
}

function connect() {
  source = new EventSource("/status/events");
  source.onopen = () => {
    wait = 5000;
    badge("live", "live", true);
  };
  source.onmessage = (e) => render(JSON.parse(e.data));
  source.onerror = () => {
    badge("live", "reconnecting", false);
    // A refused stream (503: too many open) is not retried by EventSource itself.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, wait);
      wait = Math.min(wait * 2, 60000);
    }
  };
}

document.addEventListener("DOMContentLoaded", connect);

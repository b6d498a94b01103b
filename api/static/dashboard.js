// kvraft dashboard: polls /cluster and /stats of the node that served this page and draws them.
// Every value from the server is put in the page as text (textContent), never as markup.
"use strict";
(() => {
  const TOKEN_KEY = "kvraft.token";
  const POLL_MS = 1000;
  const TIMEOUT_MS = 3000;
  const HISTORY = 60;
  const COLORS = ["#3b6fd8", "#1f9d55", "#d69e2e", "#b04fc9", "#d64545", "#2a9fb0", "#7a6a3a"];

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  const prev = {}; // node id -> last counters seen {ops, time, started_at}
  const history = []; // [{node id: ops/s or null}] oldest first
  let mapSignature = "";

  class AuthError extends Error {}

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style") Object.assign(el.style, v);
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return "-";
    return r >= 100 ? r.toFixed(0) : r.toFixed(1);
  }

  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const resp = await fetch(path, { headers, cache: "no-store", credentials: "omit",
                                       signal: ctl.signal });
      if (resp.status === 401) throw new AuthError(path);
      if (!resp.ok) {
        let why = "";
        try { why = (await resp.json()).message || ""; } catch (_) { /* not JSON */ }
        throw new Error(`${path}: HTTP ${resp.status}${why ? ": " + why : ""}`);
      }
      return await resp.json();
    } catch (err) {
      if (err.name === "AbortError") throw new Error(`${path}: no answer in ${TIMEOUT_MS / 1000} s`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  // -- polling and the token -------------------------------------------------------------------

  async function poll() {
    try {
      const [cluster, stats] = await Promise.all([getJSON("/cluster"), getJSON("/stats")]);
      render(cluster, stats);
      setStatus("live", "ok", "");
    } catch (err) {
      if (err instanceof AuthError) { askToken(Boolean(token)); return; } // polling resumes on submit
      setStatus("unreachable", "bad", `Cannot reach ${location.host}: ${err.message}. Retrying.`);
    }
    setTimeout(poll, POLL_MS);
  }

  function setStatus(text, kind, banner) {
    const s = $("status");
    s.textContent = text;
    s.className = "pill " + kind;
    $("banner").hidden = !banner;
    $("banner").textContent = banner;
    $("main").classList.toggle("stale", kind !== "ok");
    if (kind === "ok") $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function askToken(refused) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !refused;
    $("forget").hidden = true;
    setStatus("token needed", "bad", "");
    $("token").focus();
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("main").hidden = false;
    $("forget").hidden = false;
    poll();
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    location.reload();
  });
  $("forget").hidden = !token;

  // -- drawing --------------------------------------------------------------------------------

  function render(cluster, stats) {
    const nodes = cluster.nodes || [];
    const ids = nodes.map((n) => n.id);
    const color = {};
    ids.forEach((id, i) => { color[id] = COLORS[i % COLORS.length]; });
    const rates = updateRates(stats, ids);
    const held = {};
    for (const reps of Object.values(cluster.partitions || {})) {
      for (const n of reps) held[n] = (held[n] || 0) + 1;
    }

    $("served-by").textContent = cluster.node || "-";
    $("leader").textContent = cluster.leader || "none";
    const raft = cluster.raft || {};
    $("raft").textContent = `${raft.state || "?"}, term ${raft.term}, commit ${raft.commit_index}`;
    $("epoch").textContent = cluster.partition_epoch ?? "-";
    $("rf").textContent = cluster.replication_factor ?? "-";
    const up = nodes.filter((n) => n.alive).length;
    $("nodes-up").textContent = `${up} / ${nodes.length}`;
    alert("nodes-up", up < nodes.length);
    alert("under", cluster.under_replicated > 0);
    alert("hints-cluster", cluster.hints_pending_cluster > 0);
    const total = Object.values(rates).reduce((a, r) => a + (r || 0), 0);
    $("ops-total").textContent = fmtRate(total);
    $("hints-cluster").textContent = cluster.hints_pending_cluster ?? "-";
    $("hints-local").textContent = cluster.hints_pending ?? "-";
    $("under").textContent = cluster.under_replicated ?? "-";
    $("rebalances").textContent = cluster.rebalances ?? "-";
    const sync = cluster.sync || {};
    $("sync-round").textContent = sync.round ?? "-";
    $("sync-interval").textContent = sync.interval ?? "-";

    renderNodes(nodes, held, rates, color);
    renderChart(ids, color);
    renderMap(cluster, nodes);
    renderBalance(cluster, nodes, held);
    renderSync(cluster);
  }

  function alert(id, on) {
    $(id).closest(".card").classList.toggle("alert", Boolean(on));
  }

  function updateRates(stats, ids) {
    const rates = {};
    const answers = (stats && stats.nodes) || {};
    for (const id of ids) {
      const s = answers[id];
      rates[id] = null;
      if (!s || !s.ok) continue;
      const p = prev[id];
      if (p && p.started_at === s.started_at && s.time > p.time) {
        rates[id] = Math.max(0, (s.ops - p.ops) / (s.time - p.time));
      } else {
        rates[id] = p ? 0 : null; // restarted (counters reset) or first sample
      }
      prev[id] = { ops: s.ops, time: s.time, started_at: s.started_at };
    }
    history.push(rates);
    while (history.length > HISTORY) history.shift();
    return rates;
  }

  function renderNodes(nodes, held, rates, color) {
    const rows = nodes.map((n) => h("tr", {
      class: n.alive ? "up" : "down",
      data: { node: n.id, alive: n.alive, leader: n.is_leader },
    },
      h("td", {}, h("i", { class: "swatch", style: { display: "inline-block", width: "10px",
        height: "10px", borderRadius: "2px", marginRight: "6px", background: color[n.id] } }),
        h("b", {}, n.id), n.member === false ? " (not a Raft member)" : ""),
      h("td", {}, n.http),
      h("td", { class: "alive" }, h("span", { class: "badge " + (n.alive ? "up" : "down") },
        n.alive ? "up" : "down")),
      h("td", { class: "role" }, h("span", { class: "badge " + (n.is_leader ? "leader" : "other") },
        n.is_leader ? "leader" : "follower")),
      h("td", { class: "num keys" }, n.keys ?? "?"),
      h("td", { class: "num bytes" }, fmtBytes(n.bytes)),
      h("td", { class: "num parts" }, held[n.id] || 0),
      h("td", { class: "num ops" }, fmtRate(rates[n.id])),
    ));
    $("nodes").tBodies[0].replaceChildren(...rows);
  }

  function renderChart(ids, color) {
    const chart = $("ops-chart");
    const W = 600, H = 140;
    let max = 1;
    for (const r of history) for (const v of Object.values(r)) if (v > max) max = v;
    max *= 1.1;
    const parts = [svg("line", { x1: 0, y1: H / 2, x2: W, y2: H / 2 }),
                   svg("line", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 })];
    const step = W / (HISTORY - 1);
    const offset = HISTORY - history.length;
    for (const id of ids) {
      const pts = [];
      history.forEach((r, i) => {
        if (r[id] !== null && r[id] !== undefined) {
          pts.push(`${((offset + i) * step).toFixed(1)},${(H - (r[id] / max) * H).toFixed(1)}`);
        }
      });
      if (pts.length) parts.push(svg("polyline", { points: pts.join(" "), stroke: color[id] }));
    }
    chart.replaceChildren(...parts);
    const last = history[history.length - 1] || {};
    $("ops-legend").replaceChildren(
      ...ids.map((id) => h("li", {}, h("i", { style: { background: color[id] } }),
                           `${id}: ${fmtRate(last[id])} ops/s`)),
      h("li", {}, `scale 0 to ${fmtRate(max)} ops/s`));
  }

  function renderMap(cluster, nodes) {
    const partitions = cluster.partitions || {};
    const filling = cluster.filling || {};
    const leaving = cluster.leaving || {};
    const rf = cluster.replication_factor || 1;
    const count = Object.keys(partitions).length;
    const alive = {};
    for (const n of nodes) alive[n.id] = n.alive;
    const sig = JSON.stringify([partitions, filling, leaving, alive]);
    if (sig === mapSignature) return;
    mapSignature = sig;
    const under = [];
    for (let p = 0; p < count; p++) {
      const reps = partitions[p] || [];
      const filled = reps.filter((n) => !(filling[p] || []).includes(n) && alive[n] !== false);
      if (filled.length < rf) under.push(p);
    }
    const listed = under.slice(0, 12).join(", ") + (under.length > 12 ? ", ..." : "");
    $("pmap-caption").textContent =
      `(${count} partitions x ${nodes.length} nodes, ${rf} replicas each` +
      (under.length ? `; ${under.length} under-replicated: ${listed})` : ")");
    const grid = $("pmap");
    grid.style.gridTemplateColumns = `max-content repeat(${count}, minmax(6px, 1fr))`;
    const cells = [h("div", { class: "name tick" }, "partition")];
    for (let p = 0; p < count; p++) cells.push(h("div", { class: "tick" }, p % 8 === 0 ? p : ""));
    cells.push(h("div", { class: "name tick" }, ""));
    for (let p = 0; p < count; p++) {
      cells.push(h("div", { class: "colmark" + (under.includes(p) ? " under" : ""),
                            title: under.includes(p) ? `partition ${p} is under-replicated` : "" }));
    }
    for (const n of nodes) {
      cells.push(h("div", { class: "name" + (n.alive ? "" : " down"), data: { node: n.id } },
                   n.id + (n.alive ? "" : " (down)")));
      for (let p = 0; p < count; p++) {
        const reps = partitions[p] || [];
        let state = "";
        if ((filling[p] || []).includes(n.id)) state = "filling";
        else if ((leaving[p] || []).includes(n.id)) state = "leaving";
        else if (reps.includes(n.id)) state = "held";
        const title = `partition ${p}: ${reps.join(", ") || "no replicas"}` +
          ((filling[p] || []).length ? `; filling ${filling[p].join(", ")}` : "") +
          ((leaving[p] || []).length ? `; leaving ${leaving[p].join(", ")}` : "");
        cells.push(h("div", { class: `cell ${state}${n.alive ? "" : " dead"}`, title,
                              data: { part: p, node: n.id, state: state || "none" } }));
      }
    }
    grid.replaceChildren(...cells);
  }

  function renderBalance(cluster, nodes, held) {
    const count = Object.keys(cluster.partitions || {}).length;
    const live = nodes.filter((n) => n.alive).length || 1;
    const ideal = (count * (cluster.replication_factor || 1)) / live;
    const maxParts = Math.max(ideal, ...nodes.map((n) => held[n.id] || 0), 1);
    const maxBytes = Math.max(1, ...nodes.map((n) => n.bytes || 0));
    const bar = (value, max, mark) => h("div", { class: "bar" },
      h("span", { style: { width: `${(100 * value) / max}%` } }),
      mark === undefined ? null : h("em", { style: { left: `${(100 * mark) / max}%` },
                                            title: `even share: ${mark.toFixed(1)}` }));
    const rows = nodes.map((n) => h("tr", { data: { node: n.id }, class: n.alive ? "" : "down" },
      h("td", {}, n.id),
      h("td", {}, bar(held[n.id] || 0, maxParts, ideal),
        h("span", { class: "bar-label" }, `${held[n.id] || 0} partitions`)),
      h("td", {}, bar(n.bytes || 0, maxBytes),
        h("span", { class: "bar-label" }, fmtBytes(n.bytes)))));
    $("balance").tBodies[0].replaceChildren(...rows);
  }

  function renderSync(cluster) {
    const sync = cluster.sync || {};
    const last = sync.last_local_round || {};
    const count = Object.keys(cluster.partitions || {}).length;
    const rows = [
      ["current round", sync.round],
      ["interval", `${sync.interval} s`],
      ["partitions synced in the last round", `${sync.partitions_synced_last_round ?? "?"} / ${count}`],
      ["this node's last round", last.id],
      ["  took", last.seconds === undefined ? "-" : `${last.seconds} s`],
      ["  partitions it led / synced", `${last.partitions ?? "-"} / ${last.synced ?? "-"}`],
      ["  records / bytes exchanged", `${last.records ?? "-"} / ${fmtBytes(last.bytes)}`],
      ["  keys repaired / tombstones purged", `${last.repaired ?? "-"} / ${last.purged ?? "-"}`],
      ["  errors", (last.errors || []).join("; ") || "none"],
    ];
    for (const [k, v] of Object.entries(sync.totals || {})) {
      rows.push([`total ${k.replace(/_/g, " ")}`, k.endsWith("bytes") ? fmtBytes(v) : v]);
    }
    $("sync").tBodies[0].replaceChildren(...rows.map(([k, v]) =>
      h("tr", {}, h("th", {}, k), h("td", {}, v ?? "-"))));
  }

  poll();
})();

// zkv dashboard: polls this node's JSON API (docs/dashboard.md) and draws the cluster.
// Plain DOM and SVG; every text from the API goes in through textContent.
"use strict";

(function () {
  const POLL_MS = 1000; // /api/status (and /api/events) at least once a second
  const REQUEST_TIMEOUT_MS = 2500;
  const R = 118; // ring radius in SVG units
  const RT = 96; // radius of the target ring during a transition
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2",
                   "#edc948", "#9c755f", "#ff9da7", "#bab0ac", "#1f77b4", "#d62728"];
  const RANKS = ["primary", "secondary", "tertiary"];
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    status: null, // the last /api/status
    ring: null, // the last /api/ring
    ringSignature: "",
    located: null, // the last /api/locate answer
    colours: new Map(),
    failures: 0,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, { signal: ctl.signal, cache: "no-store" });
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (!response.ok) {
        const message = body && body.error ? body.error : `HTTP ${response.status}`;
        const err = new Error(message);
        err.status = response.status;
        throw err;
      }
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------------ formatting

  function colour(id) {
    return state.colours.get(id) || "#999";
  }

  function assignColours(ids) {
    const sorted = [...ids].sort();
    state.colours = new Map(sorted.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.floor(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
  }

  function count(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function rate(n) {
    if (n === null || n === undefined) return "–";
    return n >= 100 ? Math.round(n).toLocaleString("en-US") : String(Math.round(n * 10) / 10);
  }

  function ms(v) {
    if (v < 0.01) return "<0.01";
    if (v >= 10) return String(Math.round(v));
    if (v >= 1) return v.toFixed(1);
    return v.toFixed(2);
  }

  function clock(ts) {
    const d = new Date(ts * 1000);
    const pad = (x, w) => String(x).padStart(w || 2, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
           `.${pad(d.getMilliseconds(), 3)}`;
  }

  function swatch(id) {
    const s = el("span", { class: "swatch" });
    s.style.background = colour(id);
    return s;
  }

  // ------------------------------------------------------------------ the ring

  function point(turns, radius) {
    const a = 2 * Math.PI * turns - Math.PI / 2;
    return [radius * Math.cos(a), radius * Math.sin(a)];
  }

  function arcPath(start, end, radius) {
    const [x1, y1] = point(start, radius);
    const [x2, y2] = point(end, radius);
    const large = end - start > 0.5 ? 1 : 0;
    return `M ${x1.toFixed(2)} ${y1.toFixed(2)} A ${radius} ${radius} 0 ${large} 1 ` +
           `${x2.toFixed(2)} ${y2.toFixed(2)}`;
  }

  function drawArcs(group, arcs, radius, cls) {
    for (const [start, end, owner] of arcs) {
      let shape;
      if (end - start >= 0.9999) {
        shape = svg("circle", { cx: 0, cy: 0, r: radius });
      } else {
        shape = svg("path", { d: arcPath(start, end, radius) });
      }
      shape.setAttribute("class", cls);
      shape.setAttribute("stroke", colour(owner));
      shape.setAttribute("data-node", owner);
      shape.appendChild(svg("title", {}, owner));
      group.appendChild(shape);
    }
  }

  function drawRing() {
    const ring = state.ring;
    const root = $("ring");
    root.replaceChildren();
    if (!ring) return;
    root.appendChild(svg("circle", { class: "track", cx: 0, cy: 0, r: R + 12 }));
    const arcs = svg("g", { id: "arcs" });
    drawArcs(arcs, ring.arcs, R, "arc");
    if (ring.target_arcs) drawArcs(arcs, ring.target_arcs, RT, "arc target");
    root.appendChild(arcs);
    root.appendChild(svg("text", { class: "center", x: 0, y: -6 }, `epoch ${ring.epoch}`));
    const sub = ring.transition ? "ring change under way" :
      `${ring.nodes.length} nodes · ${ring.replicas} replicas`;
    root.appendChild(svg("text", { class: "center-sub", x: 0, y: 12 }, sub));
    if (ring.transition) {
      root.appendChild(svg("text", { class: "center-sub", x: 0, y: 28 },
                           "inner: the target ring"));
    }
    root.appendChild(svg("g", { id: "key-marks" }));
    $("ring-caption").textContent = `${ring.vnodes} tokens a node, clockwise from the top`;
    drawLocated();
  }

  function drawLocated() {
    const marks = $("key-marks");
    const found = state.located;
    const replicas = found ? new Set(found.replicas.concat(found.target_replicas || [])) : null;
    for (const arc of document.querySelectorAll("#arcs .arc")) {
      const node = arc.getAttribute("data-node");
      arc.classList.toggle("dim", replicas !== null && !replicas.has(node));
      arc.classList.toggle("replica", replicas !== null && replicas.has(node));
    }
    if (!marks) return;
    marks.replaceChildren();
    if (!found) return;
    const [kx, ky] = point(found.position, R + 14);
    marks.appendChild(svg("line", { class: "key-line", x1: 0, y1: 0, x2: kx.toFixed(2),
                                     y2: ky.toFixed(2) }));
    marks.appendChild(svg("circle", { class: "key-dot", cx: kx.toFixed(2), cy: ky.toFixed(2),
                                       r: 3.5 }));
    (found.points || []).forEach((turns, i) => {
      const node = found.replicas[i];
      // One step further out per rank, so markers of nearby tokens never hide each other.
      const [x, y] = point(turns, R + 22 + 17 * i);
      const dot = svg("circle", { class: "rank", cx: x.toFixed(2), cy: y.toFixed(2), r: 8,
                                  fill: colour(node), "data-node": node,
                                  "data-rank": RANKS[i] || `replica ${i + 1}` });
      dot.appendChild(svg("title", {}, `${RANKS[i] || "replica"}: ${node}`));
      marks.appendChild(dot);
      marks.appendChild(svg("text", { class: "rank-text", x: x.toFixed(2), y: y.toFixed(2) },
                            i + 1));
    });
  }

  function markDownArcs() {
    // A node that is not alive keeps its tokens (until it is removed), drawn dashed.
    const notAlive = new Set((state.status ? state.status.members : [])
      .filter((m) => m.status !== "alive").map((m) => m.id));
    for (const arc of document.querySelectorAll("#arcs .arc")) {
      arc.classList.toggle("not-alive", notAlive.has(arc.getAttribute("data-node")));
    }
  }

  function drawLegend() {
    const legend = $("legend");
    legend.replaceChildren();
    if (!state.status) return;
    for (const m of state.status.members) {
      if (!state.ring || !(state.ring.nodes.includes(m.id) ||
          (state.ring.target || []).includes(m.id))) continue;
      const li = el("li", { class: m.status, "data-node": m.id });
      li.appendChild(swatch(m.id));
      li.appendChild(document.createTextNode(m.id));
      legend.appendChild(li);
    }
  }

  // ------------------------------------------------------------------ key lookup

  async function locate(event) {
    event.preventDefault();
    const key = $("key").value;
    const message = $("locate-message");
    message.classList.remove("error");
    const size = new TextEncoder().encode(key).length;
    const limit = state.status ? state.status.max_key : null;
    if (!key) {
      showLocated(null, "Type a key first.", true);
      return;
    }
    if (limit !== null && size > limit) {
      // Checked here too, so the page never asks for what the node must refuse.
      showLocated(null, `That key is ${count(size)} bytes; zkv keys are at most ` +
                        `${count(limit)} bytes (max_key).`, true);
      return;
    }
    message.textContent = "Looking up…";
    try {
      const found = await getJSON(`/api/locate?key=${encodeURIComponent(key)}`);
      showLocated(found, `Key "${found.key}" (token ${found.token}, epoch ${found.epoch}):`,
                  false);
    } catch (err) {
      showLocated(null, `Cannot locate that key: ${err.message}`, true);
    }
  }

  function showLocated(found, text, isError) {
    state.located = found;
    const message = $("locate-message");
    message.textContent = text;
    message.classList.toggle("error", isError);
    const list = $("locate-result");
    list.replaceChildren();
    if (found) {
      found.replicas.forEach((node, i) => {
        const li = el("li", { "data-node": node, "data-rank": RANKS[i] || "replica" });
        li.appendChild(swatch(node));
        li.appendChild(el("strong", {}, node));
        li.appendChild(el("span", { class: "rank-name" }, RANKS[i] || `replica ${i + 1}`));
        list.appendChild(li);
      });
      if (found.target_replicas && found.target_replicas.join() !== found.replicas.join()) {
        list.appendChild(el("li", { class: "muted" },
                            `after the ring change: ${found.target_replicas.join(", ")}`));
      }
    }
    drawLocated();
    renderMembers();
  }

  // ------------------------------------------------------------------ members

  function cell(row, text, cls, title) {
    const td = el("td", { class: cls || null, title: title || null }, text);
    row.appendChild(td);
    return td;
  }

  function renderMembers() {
    const body = $("members").tBodies[0];
    body.replaceChildren();
    const status = state.status;
    if (!status) return;
    const ranks = new Map((state.located ? state.located.replicas : []).map((n, i) => [n, i]));
    for (const m of status.members) {
      const row = el("tr", { "data-node": m.id, "data-status": m.status,
                             "data-answering": String(m.answering) });
      row.classList.add(m.status);
      if (ranks.has(m.id)) {
        row.classList.add("replica");
        row.setAttribute("data-rank", RANKS[ranks.get(m.id)] || "replica");
      }
      const name = cell(row, "");
      name.appendChild(swatch(m.id));
      if (m.http && !m.self) {
        name.appendChild(el("a", { href: m.http, title: `${m.id}'s own dashboard` }, m.id));
      } else {
        name.appendChild(document.createTextNode(m.id));
      }
      if (m.answering !== null) {
        const dot = el("span", { class: m.answering ? "answer" : "answer no",
                                 title: m.answering ? "answers on its HTTP port" :
                                   "does not answer on its HTTP port" });
        name.appendChild(dot);
      }
      if (m.self) name.appendChild(el("span", { class: "badge me" }, "this node"));
      if (ranks.has(m.id)) {
        name.appendChild(el("span", { class: "badge" }, RANKS[ranks.get(m.id)] || "replica"));
      }
      name.appendChild(el("span", { class: "small" },
                          `${m.address.replace("tcp://", "")} · inc ${m.incarnation || "–"}` +
                          (m.pid ? ` · pid ${m.pid}` : "")));
      const st = cell(row, "");
      st.appendChild(el("span", { class: `pill ${m.status}`, "data-status": m.status },
                        m.status));
      if (m.ring && m.ring !== "normal") {
        // Joining, leaving or being removed: a ring change is moving its ranges.
        st.appendChild(document.createTextNode(" "));
        st.appendChild(el("span", { class: `pill ${m.ring}`, "data-ring": m.ring }, m.ring));
      } else {
        st.appendChild(el("span", { class: "small" }, m.ring ? "ring: normal" : "not in ring"));
      }
      const fig = m.figures;
      const stale = fig && !m.answering;
      const staleTitle = stale ? `last figures, ${m.stale}s old: it does not answer` : null;
      cell(row, m.answering ? duration(m.uptime) : "–");
      cell(row, fig ? count(fig.keys) : "–", stale ? "num stale" : "num", staleTitle);
      cell(row, fig ? bytes(fig.bytes) : "–", stale ? "num stale" : "num", staleTitle);
      const opsCell = cell(row, "", "num");
      if (fig && m.answering) {
        const kinds = Object.entries(fig.ops_per_s || {}).filter(([, v]) => v > 0);
        const total = kinds.reduce((a, [, v]) => a + v, 0);
        opsCell.textContent = rate(total);
        row.setAttribute("data-ops", String(total));
        if (kinds.length) {
          opsCell.appendChild(el("span", { class: "small" },
                                 kinds.map(([k, v]) => `${k} ${rate(v)}`).join(" · ")));
        }
      } else {
        opsCell.textContent = "–";
      }
      const lat = fig && m.answering ? fig.latency_ms : null;
      cell(row, lat && lat.p50 !== null ? `${ms(lat.p50)} / ${ms(lat.p99)} ms` : "–", "num");
      const failed = cell(row, fig ? count(fig.failed_total) : "–", "num");
      if (fig && fig.failed_per_s > 0 && m.answering) {
        failed.appendChild(el("span", { class: "small" }, `${fig.failed_per_s}/s now`));
      }
      cell(row, fig ? streaming(fig.streaming) : "–", stale ? "stale" : null);
      const rep = fig ? fig.repairs : null;
      cell(row, rep ? repairs(rep) : "–",
           stale ? "stale" : null,
           rep ? `anti-entropy: ${rep.anti_entropy_rounds} rounds that repaired ` +
                 `${rep.anti_entropy_records} records; read repairs: ${rep.read_repairs}; ` +
                 `corrupt records found: ${rep.corrupt_records}; records received by ` +
                 `hand-off: ${rep.handoff_records}` : null);
      body.appendChild(row);
    }
  }

  function repairs(r) {
    const parts = [];
    if (r.anti_entropy_records) parts.push(`${count(r.anti_entropy_records)} by anti-entropy`);
    if (r.read_repairs) parts.push(`${count(r.read_repairs)} read repairs`);
    if (r.corrupt_records) parts.push(`${count(r.corrupt_records)} corrupt`);
    return parts.length ? parts.join(" · ") : "none";
  }

  function streaming(s) {
    if (!s || !s.ranges) return "idle";
    let text = s.active ? `${s.ranges_done}/${s.ranges} ranges` : "done";
    text += `, ${count(s.keys)} keys`;
    if (s.degraded_ranges) text += `, ${s.degraded_ranges} degraded`;
    return text;
  }

  // ------------------------------------------------------------------ header and events

  function renderSummary() {
    const s = state.status;
    const t = s.totals;
    const parts = Object.entries(t.members).map(([k, v]) => `${v} ${k}`);
    $("summary").textContent =
      `${s.members.length} members (${parts.join(", ")}) · epoch ${s.epoch}` +
      `${s.transition ? " · ring change under way" : ""} · ${rate(t.ops_per_s)} ops/s · ` +
      `${count(t.keys)} records held · served by ${s.node}`;
    $("members-caption").textContent =
      `as ${s.node} sees them (down after t_fail = ${s.t_fail}s without gossip)`;
  }

  function renderEvents(events) {
    const list = $("events");
    list.replaceChildren();
    for (const e of events) {
      const li = el("li", { "data-kind": e.kind, "data-node": e.node });
      if (e.kind === "member_status") {
        li.classList.add(/ (down|removed)/.test(e.text) ? "bad" : "good");
      } else if (/^(corrupt_record|store_full|step_error|majority_lost|stall|ranges_degraded)$/
                 .test(e.kind)) {
        li.classList.add("bad");
      } else if (/^map_|^stream_|^joined|^decommissioned|^removed/.test(e.kind)) {
        li.classList.add("ring");
      }
      li.appendChild(el("span", { class: "time" }, clock(e.ts)));
      const who = el("span", {});
      who.appendChild(swatch(e.node));
      who.appendChild(document.createTextNode(e.node));
      li.appendChild(who);
      li.appendChild(el("span", { class: "text" }, e.text));
      list.appendChild(li);
    }
    if (!events.length) list.appendChild(el("li", { class: "muted" }, "nothing yet"));
  }

  function showProblem(err) {
    const banner = $("banner");
    banner.replaceChildren();
    const who = state.status ? state.status.node : "this node";
    const since = state.status ? `the figures below are as of ${clock(state.status.time)}` :
      "nothing to show yet";
    banner.title = err.message;
    banner.appendChild(document.createTextNode(
      `${who} is not answering: ${since}. Retrying every second.`));
    const others = state.status ? state.status.members.filter((m) => m.http && !m.self) : [];
    if (others.length) {
      banner.appendChild(document.createTextNode(" Other nodes' dashboards:"));
      for (const m of others) banner.appendChild(el("a", { href: m.http }, m.id));
    }
    banner.hidden = false;
    $("live-dot").className = "dot bad";
  }

  // ------------------------------------------------------------------ polling

  async function poll() {
    const started = Date.now();
    try {
      const status = await getJSON("/api/status");
      state.status = status;
      const signature = `${status.epoch}|${status.ring.join()}|${(status.target || []).join()}`;
      const ids = status.members.map((m) => m.id);
      if (ids.join() !== [...state.colours.keys()].join()) assignColours(ids);
      if (signature !== state.ringSignature) {
        state.ring = await getJSON("/api/ring");
        state.ringSignature = signature;
        drawRing();
      }
      renderSummary();
      renderMembers();
      drawLegend();
      markDownArcs();
      const events = await getJSON("/api/events?limit=80");
      renderEvents(events.events);
      state.failures = 0;
      $("banner").hidden = true;
      $("live-dot").className = "dot ok";
      $("updated").textContent = `updated ${clock(status.time)}`;
      document.body.setAttribute("data-updated", String(status.time));
    } catch (err) {
      state.failures += 1;
      showProblem(err);
    } finally {
      setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("locate-form").addEventListener("submit", (event) => {
      locate(event).catch((err) => showLocated(null, `Cannot locate that key: ${err.message}`,
                                               true));
    });
    poll();
  });
})();

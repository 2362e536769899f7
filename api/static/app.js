// The operator dashboard: plain JS, no build step. Data comes from the admin API with the key the
// operator types (kept in sessionStorage, so it dies with the tab); live events come from the SSE
// endpoint read with fetch(), because EventSource cannot send an Authorization header.
//
// Every table is redrawn by a keyed diff (rows keyed by client/room or container name; cells updated only
// when their text changes), never by replacing the table: a redraw every 2 s must not drop keyboard focus,
// make a screen reader re-read the table, or cost a full rebuild with 500 agents.
"use strict";

const KEY_STORAGE = "orch_api_key";
const POLL_MS = 2000;
const POOL_RETRY_POLLS = 15;  // no pool API (404): ask again only every 30 s
const DASH = "—";
const state = {
  rooms: [], containers: [], graceDeadline: new Map(), lastSeq: 0, call: null, authFailed: false,
  roomStates: null, poolMissingPolls: 0, engine: null,
};
// Render cost, read by the browser tests (and by anyone profiling in devtools): DOM patch time and the time
// to the next frame after it (style, layout and paint included).
const metrics = { redraws: 0, patchMs: [], frameMs: [], rows: 0 };
window.dashboardMetrics = metrics;
const $ = (sel) => document.querySelector(sel);

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey()) h["Authorization"] = "Bearer " + apiKey();
  return h;
}

function banner(text) {
  const b = $("#banner");
  // Only on change: re-setting an alert's text on every poll would be re-announced.
  if (b.textContent !== (text || "")) b.textContent = text || "";
  b.hidden = !text;
}

// ---- announcements (one polite live region, batched) ------------------------------------------

let pending = [];
let announceTimer = null;
function announce(message) {
  pending.push(message);
  if (announceTimer) return;
  // Coalesce what happens within a second into one message; long lists are summarised, not read out.
  announceTimer = setTimeout(() => {
    announceTimer = null;
    const msgs = pending.map((m) => m.replace(/\.$/, ""));
    pending = [];
    const text = msgs.length > 3 ? msgs.slice(0, 3).join(". ") + ". And " + (msgs.length - 3) + " more changes." : msgs.join(". ") + ".";
    const region = $("#announcer");
    region.textContent = "";
    // A fresh text node in the next frame: screen readers announce it even when it equals the last one.
    requestAnimationFrame(() => { region.textContent = text; });
  }, 1000);
}

async function api(method, path, body, { optional = false } = {}) {
  const opts = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) opts.body = JSON.stringify(body);
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401 || resp.status === 403) {
    state.authFailed = true;
    banner((data && data.detail) || "This page needs an admin API key.");
  }
  if (!resp.ok) {
    if (optional && resp.status === 404) return null;  // an endpoint this orchestrator does not offer (yet)
    const err = new Error((data && data.detail) || ("HTTP " + resp.status));
    err.status = resp.status;
    throw err;
  }
  if (state.authFailed) { state.authFailed = false; banner(""); }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  return node;
}
function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
function setAttr(node, name, value) {
  if (value === null || value === undefined) { if (node.hasAttribute(name)) node.removeAttribute(name); }
  else if (node.getAttribute(name) !== String(value)) node.setAttribute(name, value);
}

function fmtAge(s) {
  if (s === null || s === undefined) return DASH;
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}
function fmtCpu(r) { return r === null || r === undefined ? DASH : (r * 100).toFixed(1) + "%"; }
function fmtMem(b) { return b === null || b === undefined ? DASH : (b / 1048576).toFixed(1) + " MiB"; }
function orDash(v) { return v === null || v === undefined || v === "" ? DASH : String(v); }
function roomKey(r) { return r.client_id + "/" + r.room; }

// ---- states: text and an icon, with a tone that only repeats them ---------------------------------

const STATES = {
  // room lifecycle
  empty: ["○", "empty", "neutral"], starting: ["◔", "starting", "warn"], active: ["●", "active", "ok"],
  grace_period: ["◑", "grace period", "grace"], closing: ["✕", "closing", "bad"],
  // container status
  running: ["●", "running", "ok"], created: ["◔", "created", "warn"], restarting: ["↻", "restarting", "warn"],
  paused: ["‖", "paused", "neutral"], removing: ["✕", "removing", "bad"], exited: ["✕", "exited", "bad"], dead: ["✕", "dead", "bad"],
  pending: ["◔", "pending", "warn"], unknown: ["?", "unknown", "neutral"],
  // container health
  healthy: ["✓", "healthy", "ok"], unhealthy: ["✕", "unhealthy", "bad"], none: ["–", "no check", "neutral"],
};
const HEALTH_STARTING = ["◔", "starting", "warn"];
function badge() {
  return el("span", { class: "badge" }, el("span", { class: "icon", "aria-hidden": "true" }), el("span", { class: "label" }));
}
function setBadge(node, value, table) {
  const [icon, label, tone] = (table && table[value]) || STATES[value] || ["?", orDash(value), "neutral"];
  const cls = "badge tone-" + tone;
  if (node.className !== cls) node.className = cls;
  setAttr(node, "data-value", value);
  setText(node.firstChild, icon);
  setText(node.lastChild, label);
}

// ---- keyed tables --------------------------------------------------------------------------

// A column: header text lives in index.html; here `text(row)` for plain cells, `badge(row)` for states,
// `make(row)`/`update(cell, row)` for anything else. `rowHeader` marks the cell that names the row.
function keyedTable(tbody, columns, keyOf) {
  function create(r) {
    const tr = el("tr");
    for (const c of columns) {
      const cell = el(c.rowHeader ? "th" : "td", { class: c.cls || null, scope: c.rowHeader ? "row" : null });
      if (c.badge) cell.append(badge());
      else if (c.make) cell.append(c.make(tr));
      tr.append(cell);
    }
    return tr;
  }
  function update(tr, r) {
    tr._row = r;
    columns.forEach((c, i) => {
      const cell = tr.children[i];
      if (c.badge) setBadge(cell.firstChild, c.badge(r), c.states);
      else if (c.update) c.update(cell, r);
      else setText(cell, c.text(r));
      if (c.title) setAttr(cell, "title", c.title(r));
    });
  }
  // Rows are never moved unless the order changed, and focus is put back if a move took it: the element
  // the operator is on survives every redraw. A removed or filtered-out row hands focus to a neighbour.
  function sync(rows, { matches, onRow, fallbackFocus } = {}) {
    const active = document.activeElement;
    const kids = [...tbody.children];
    const activeAt = active && tbody.contains(active) ? kids.findIndex((tr) => tr.contains(active)) : -1;
    const existing = new Map(kids.map((tr) => [tr.dataset.key, tr]));
    const wanted = new Set(rows.map(keyOf));
    for (const tr of kids) if (!wanted.has(tr.dataset.key)) tr.remove();
    let cursor = tbody.firstElementChild;
    for (const r of rows) {
      const k = keyOf(r);
      let tr = existing.get(k);
      if (!tr) { tr = create(r); tr.dataset.key = k; }
      update(tr, r);
      if (onRow) onRow(tr, r);
      const show = !matches || matches(r);
      if (tr.hidden === show) tr.hidden = !show;
      if (tr === cursor) cursor = cursor.nextElementSibling;
      else tbody.insertBefore(tr, cursor);
    }
    if (!active) return;
    // Checked without asking document.activeElement first: Chrome still reports an element in a just-hidden
    // row as focused until its next style update, and only then drops focus to <body>.
    if (activeAt >= 0 && (!active.isConnected || active.closest("tr").hidden)) {
      // The operator's row went (closed) or was filtered out: the next row still shown, else the one before,
      // else the table's heading -- never <body>, which would send them back to the top of the page.
      const usable = (tr) => tr.isConnected && !tr.hidden;
      const near = kids.slice(activeAt + 1).find(usable) || kids.slice(0, activeAt).reverse().find(usable);
      const target = (near && near.querySelector("button")) || fallbackFocus;
      if (target) target.focus();
    } else if (active !== document.activeElement && active.isConnected) {
      active.focus({ preventScroll: true });  // a reorder moved the focused row
    }
  }
  return { sync };
}

// ---- filters ---------------------------------------------------------------------------------

function filters() {
  return {
    client: $("#filter-client").value.trim().toLowerCase(),
    node: $("#filter-node").value.trim().toLowerCase(),
    state: $("#filter-state").value,
  };
}
function has(value, needle) { return !needle || (value || "").toLowerCase().includes(needle); }
// Indexes built once per redraw: per-row lookups over all rows would make 500 rooms cost 250 000 steps.
const index = { nodesByRoom: new Map(), roomNameCount: new Map(), agentStatesByRoom: new Map() };
function buildIndex(rooms, containers) {
  const nodes = new Map();
  for (const c of containers) {
    if (!c.node) continue;
    const k = c.client_id + "/" + c.room;
    if (!nodes.has(k)) nodes.set(k, new Set());
    nodes.get(k).add(c.node);
  }
  index.nodesByRoom = new Map([...nodes].map(([k, set]) => [k, [...set].sort().join(", ")]));
  index.agentStatesByRoom = new Map();
  for (const c of containers) {
    const k = c.client_id + "/" + c.room;
    if (!index.agentStatesByRoom.has(k)) index.agentStatesByRoom.set(k, new Set());
    index.agentStatesByRoom.get(k).add(c.status).add(c.health);
  }
  index.roomNameCount = new Map();
  for (const r of rooms) index.roomNameCount.set(r.room, (index.roomNameCount.get(r.room) || 0) + 1);
}
function roomNodes(r) { return index.nodesByRoom.get(roomKey(r)) || ""; }
function roomMatches(r, f) {
  // A state matches the room's own or one of its agents' ("rooms with an exited agent").
  const agentStates = index.agentStatesByRoom.get(roomKey(r));
  return has(r.client_id, f.client) && (!f.node || has(roomNodes(r), f.node))
    && (!f.state || r.state === f.state || (agentStates !== undefined && agentStates.has(f.state)));
}
function containerMatches(c, f, roomStateOf) {
  const states = [c.status, c.health, roomStateOf.get(c.client_id + "/" + c.room)];
  return has(c.client_id, f.client) && (!f.node || has(c.node, f.node)) && (!f.state || states.includes(f.state));
}

// ---- rooms ---------------------------------------------------------------------------------

function closeLabel(r) {
  // Distinct names (2.4.6 / 4.1.2): "Close room X"; the client is added when two clients share a room name.
  const shared = (index.roomNameCount.get(r.room) || 0) > 1;
  return "Close room " + r.room + (shared ? " of client " + r.client_id : "");
}

const roomsTable = keyedTable(document.querySelector("#rooms tbody"), [
  { text: (r) => r.client_id, cls: "wrap" },
  { text: (r) => r.room, cls: "wrap room-name", rowHeader: true },
  { badge: (r) => r.state, cls: "state" },
  { text: (r) => (r.humans.length ? r.humans.join(", ") : "0"), cls: "humans" },
  { text: (r) => (r.agents.length ? r.agents.join(", ") : "0"), cls: "agents" },
  { text: (r) => orDash(roomNodes(r)), cls: "node" },
  { update: (cell, r) => { setAttr(cell, "data-key", roomKey(r)); }, cls: "grace" },
  {
    make: (tr) => el("button", { type: "button", class: "danger close", onclick: () => closeRoom(tr._row) }, "Close"),
    update: (cell, r) => setAttr(cell.firstChild, "aria-label", closeLabel(r)),
  },
], roomKey);

function renderRooms(rows, f) {
  rows = [...rows].sort((a, b) => a.client_id.localeCompare(b.client_id) || a.room.localeCompare(b.room));
  const announcing = state.roomStates !== null;
  const before = state.roomStates || new Map();
  const after = new Map(rows.map((r) => [roomKey(r), r.state]));
  if (announcing) {
    // Only rooms the operator's filters show: watching one client must not mean hearing about all of them.
    for (const r of rows) {
      if (!roomMatches(r, f)) continue;
      const was = before.get(roomKey(r));
      if (was === undefined) announce("Room " + r.room + " appeared, " + STATES[r.state][1]);
      else if (was !== r.state) announce("Room " + r.room + " is now " + (STATES[r.state] || [0, r.state])[1]);
    }
    for (const k of before.keys()) if (!after.has(k)) announce("Room " + k.slice(k.indexOf("/") + 1) + " is gone");
  }
  state.roomStates = after;
  state.rooms = rows;
  const now = Date.now();
  state.graceDeadline.clear();
  for (const r of rows) {
    if (r.grace_remaining_s !== null && r.grace_remaining_s !== undefined) state.graceDeadline.set(roomKey(r), now + r.grace_remaining_s * 1000);
  }
  roomsTable.sync(rows, {
    matches: (r) => roomMatches(r, f),
    onRow: (tr, r) => { setAttr(tr, "data-room", r.room); setAttr(tr, "data-client", r.client_id); setAttr(tr, "data-state", r.state); },
    fallbackFocus: $("#rooms-title"),
  });
  $("#rooms-empty").hidden = rows.length > 0;
  tickGrace();
}

function tickGrace() {
  const now = Date.now();
  for (const cell of document.querySelectorAll("#rooms td.grace")) {
    const deadline = state.graceDeadline.get(cell.dataset.key);
    setText(cell, deadline === undefined ? "" : Math.max(0, Math.ceil((deadline - now) / 1000)) + "s");
  }
}

async function closeRoom(r) {
  if (!confirm("Close room " + r.room + "? Its agent containers are stopped and the LiveKit room is deleted.")) return;
  try {
    await api("POST", "/api/v1/admin/rooms/" + encodeURIComponent(r.client_id) + "/" + encodeURIComponent(r.room) + "/close");
    announce("Closed room " + r.room);
  } catch (e) {
    banner("Close failed: " + e.message);
  }
  refresh();
}

// ---- agents (containers) ---------------------------------------------------------------------

const agentsTable = keyedTable(document.querySelector("#agents tbody"), [
  { text: (c) => c.name, cls: "wrap name", rowHeader: true },
  { text: (c) => orDash(c.client_id), cls: "wrap client" },
  { text: (c) => orDash(c.agent), cls: "agent" },
  { text: (c) => orDash(c.room), cls: "wrap room", title: (c) => (c.job ? "launched for LiveKit job " + c.job : null) },
  { text: (c) => orDash(c.engine || state.engine), cls: "engine" },
  { text: (c) => orDash(c.node), cls: "node" },
  { badge: (c) => c.status, cls: "status", title: (c) => c.reason || null },
  { badge: (c) => c.health, states: { starting: HEALTH_STARTING }, cls: "health" },
  { text: (c) => (c.status === "running" ? fmtAge(c.age_s) : DASH), cls: "uptime" },
  { text: (c) => fmtCpu(c.cpu_ratio), cls: "cpu" },
  { text: (c) => fmtMem(c.memory_bytes), cls: "mem" },
], (c) => c.name);

function fillDatalist(list, values) {
  const wanted = [...new Set(values.filter(Boolean))].sort();
  const have = [...list.children].map((o) => o.value);
  if (have.join("\n") !== wanted.join("\n")) list.replaceChildren(...wanted.map((v) => el("option", { value: v })));
}

function renderContainers(rows, f) {
  state.containers = rows;
  const roomStateOf = new Map(state.rooms.map((r) => [roomKey(r), r.state]));
  agentsTable.sync(rows, {
    matches: (c) => containerMatches(c, f, roomStateOf),
    onRow: (tr, c) => setAttr(tr, "data-container", c.name),
    fallbackFocus: $("#containers-title"),
  });
  $("#containers-empty").hidden = rows.length > 0;
  fillDatalist($("#known-clients"), rows.map((c) => c.client_id));
  fillDatalist($("#known-agents"), rows.map((c) => c.agent));
  fillDatalist($("#known-nodes"), rows.map((c) => c.node));
}

// ---- pool members and dispatch jobs (optional APIs) -------------------------------------------

// GET /api/v1/admin/pool: idle members under `members`, per-domain counts under `pools`, claims by outcome;
// `enabled: false` (ORCH_POOL_MAX=0, or an engine without a pool) or a 404 (an older orchestrator): no pool.
const poolTable = keyedTable(document.querySelector("#pool tbody"), [
  { text: (m) => orDash(m.name || m.id), cls: "wrap name", rowHeader: true },
  { text: (m) => orDash(m.domain || m.isolation_domain), cls: "domain" },
  { text: (m) => orDash(m.engine || state.engine), cls: "engine" },
  { text: (m) => orDash(m.node), cls: "node" },
  { badge: (m) => m.state || m.status || "unknown", states: { idle: ["○", "idle", "ok"], warming: ["◔", "warming", "warn"], claimed: ["●", "claimed", "neutral"] }, cls: "state" },
  { text: (m) => (m.room ? (m.client_id ? m.client_id + "/" : "") + m.room : DASH), cls: "wrap room" },
  { text: (m) => fmtAge(m.age_s), cls: "age" },
  { text: (m) => fmtMem(m.memory_bytes), cls: "mem" },
], (m) => String(m.name || m.id));

function poolSummary(body, idle) {
  const pools = Array.isArray(body.pools) ? body.pools : [];
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  const parts = [idle ? plural(idle, "idle member") : "The pool is empty"];
  if (pools.length) {
    const making = pools.reduce((n, p) => n + (p.creating || 0), 0);
    const target = pools.reduce((n, p) => n + (p.target || 0), 0);
    const used = pools.reduce((n, p) => n + (p.memory_used_bytes || 0), 0);
    parts.push(plural(pools.length, "isolation domain") + ", target " + target + (making ? ", " + making + " being made" : "")
      + (used ? ", idle members use " + fmtMem(used) : ""));
  }
  const claims = body.claims || {};
  const keys = Object.keys(claims).sort();
  if (keys.length) parts.push("starts: " + keys.map((k) => k + " " + claims[k]).join(", "));
  if (body.problem) parts.push("problem: " + body.problem);
  return parts.join("; ") + ".";
}

function renderPool(body, f) {
  const wrap = $("#pool-wrap");
  if (body === null || body.enabled === false) {
    wrap.hidden = true;
    poolTable.sync([], { matches: () => true, fallbackFocus: $("#pool-title") });
    setText($("#pool-note"), body === null
      ? "No pool on this orchestrator: agents start cold (GET /api/v1/admin/pool is not offered)."
      : "No pool on this orchestrator: agents start cold" + (body.problem ? " (" + body.problem + ")." : "."));
    return;
  }
  const members = Array.isArray(body) ? body : (body.members || body.pool || []);
  poolTable.sync(members, { matches: (m) => has(m.client_id, f.client) && has(m.node, f.node) && (!f.state || (m.state || m.status) === f.state), fallbackFocus: $("#pool-title") });
  wrap.hidden = members.length === 0;
  setText($("#pool-note"), poolSummary(body, members.length));
}

const jobsTable = keyedTable(document.querySelector("#dispatch-jobs tbody"), [
  { text: (j) => orDash(j.job_id), cls: "wrap job", rowHeader: true },
  { text: (j) => orDash(j.client_id), cls: "wrap client" },
  { text: (j) => orDash(j.agent), cls: "agent" },
  { text: (j) => orDash(j.room), cls: "wrap room" },
  { badge: (j) => j.status || "unknown", states: { joined: ["●", "joined", "ok"], launching: ["◔", "launching", "warn"], failed: ["✕", "failed", "bad"] }, cls: "status" },
  { text: (j) => orDash(j.container), cls: "wrap container" },
  { text: (j) => (j.joined_after_s === null || j.joined_after_s === undefined ? DASH : Number(j.joined_after_s).toFixed(2) + "s"), cls: "joined" },
], (j) => String(j.job_id || j.dispatch_id));

function renderDispatch(body, f) {
  const jobs = (body && body.jobs) || [];
  jobsTable.sync(jobs, { matches: (j) => has(j.client_id, f.client) && (!f.state || j.status === f.state), fallbackFocus: $("#dispatch-title") });
  $("#dispatch-wrap").hidden = jobs.length === 0;
  let note;
  if (body === null) note = "This orchestrator offers no dispatch API.";
  else if (!body.enabled) note = "LiveKit dispatch is off" + (body.note ? ": " + body.note : ".");
  else note = (jobs.length ? jobs.length + " open job" + (jobs.length === 1 ? "" : "s") : "No open jobs") + (body.sync_error ? "; last sync error: " + body.sync_error : ".");
  setText($("#dispatch-note"), note);
}

function renderStats(s) {
  state.engine = s.engine || null;
  setText($("#scope"), "scope " + s.scope);
  setText($("#stat-rooms"), String(s.rooms.total));
  setText($("#stat-grace"), String(s.rooms.grace_period || 0));
  setText($("#stat-running"), String(s.containers.running));
  setText($("#stat-limit"), String(s.limits.max_agents_total));
  setText($("#stat-engine"), orDash(s.engine));
  setText($("#stat-passes"), String(s.reconciler.passes));
}

function renderFilterSummary(f) {
  const active = f.client || f.node || f.state;
  const shownAgents = document.querySelectorAll("#agents tbody tr:not([hidden])").length;
  const shownRooms = document.querySelectorAll("#rooms tbody tr:not([hidden])").length;
  const text = active
    ? "Showing " + shownAgents + " of " + state.containers.length + " agents and " + shownRooms + " of " + state.rooms.length + " rooms."
    : state.containers.length + " agents, " + state.rooms.length + " rooms.";
  setText($("#filter-summary"), text);
  return text;
}

// ---- redraw ----------------------------------------------------------------------------------

let last = null;  // the last answers, so a filter change redraws without asking the API again
function redraw() {
  if (!last) return;
  const t0 = performance.now();
  const f = filters();
  renderStats(last.stats);
  buildIndex(last.rooms.rooms, last.containers.containers);
  renderRooms(last.rooms.rooms, f);  // rooms first: the agents' state filter reads room states
  renderContainers(last.containers.containers, f);
  renderPool(last.pool, f);
  renderDispatch(last.dispatch, f);
  renderStarts(last.starts, f);
  renderFilterSummary(f);
  const patch = performance.now() - t0;
  metrics.redraws += 1;
  metrics.rows = last.rooms.rooms.length + last.containers.containers.length;
  metrics.patchMs.push(patch);
  if (metrics.patchMs.length > 50) metrics.patchMs.shift();
  // Style, layout and paint of what was patched show up in the next frame.
  requestAnimationFrame(() => setTimeout(() => {
    metrics.frameMs.push(performance.now() - t0);
    if (metrics.frameMs.length > 50) metrics.frameMs.shift();
    document.body.dataset.redraws = String(metrics.redraws);
  }, 0));
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const askPool = last === null || last.pool !== null || state.poolMissingPolls % POOL_RETRY_POLLS === 0;
    const [rooms, containers, stats, pool, dispatch, starts] = await Promise.all([
      api("GET", "/api/v1/admin/rooms"), api("GET", "/api/v1/admin/containers"), api("GET", "/api/v1/admin/stats"),
      askPool ? api("GET", "/api/v1/admin/pool", null, { optional: true }) : Promise.resolve(null),
      api("GET", "/api/v1/admin/dispatch", null, { optional: true }).catch(() => null),
      api("GET", "/api/v1/starts?limit=" + STARTS_LIMIT, null, { optional: true }).catch(() => null),  // timeline.js
    ]);
    state.poolMissingPolls = pool === null ? state.poolMissingPolls + 1 : 0;
    last = { rooms, containers, stats, pool, dispatch, starts };
    redraw();
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) banner("Cannot load: " + e.message);
  } finally {
    refreshing = false;
  }
}

let filterTimer = null;
let filterFrame = 0;
function onFilterChange() {
  // One redraw per frame however fast the operator types: each is a pass over every row.
  if (!filterFrame) filterFrame = requestAnimationFrame(() => { filterFrame = 0; redraw(); });
  // Say the result once typing pauses, not per keystroke.
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => announce(renderFilterSummary(filters())), 600);
}

// ---- live events (SSE over fetch) ----------------------------------------------------------

function addEvent(ev) {
  state.lastSeq = Math.max(state.lastSeq, ev.seq);
  const failed = ev.ok === false || (ev.kind === "trigger" && ev.error);
  const item = el("li", { "data-seq": ev.seq, "data-kind": ev.kind, class: failed ? "failed" : "" },
    el("span", { class: "muted" }, new Date(ev.at).toLocaleTimeString() + " "),
    el("span", { class: "kind" }, ev.kind),
    el("span", { class: "client", title: ev.client_id || "" }, ev.client_id ? ev.client_id.slice(0, 8) : ""), " ",
    failed ? "failed: " : "", ev.message);
  const list = $("#events");
  list.prepend(item);
  while (list.children.length > 200) list.lastChild.remove();
}

function setLive(on) {
  const p = $("#live");
  p.className = "pill " + (on ? "on" : "off");
  setText(p.querySelector(".icon"), on ? "●" : "✕");
  setText(p.querySelector(".label"), "events: " + (on ? "live" : "off"));
}

async function followEvents() {
  for (;;) {
    try {
      const resp = await fetch("/api/v1/admin/events/stream?after=" + state.lastSeq, { headers: headers() });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      setLive(true);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        // SSE allows CRLF, CR or LF line ends (sse-starlette's events end in CRLF whatever the response's `sep`):
        // normalise, keeping a trailing CR that may be the first half of a CRLF split across reads.
        const tail = buf.endsWith("\r") ? "\r" : "";
        buf = buf.slice(0, buf.length - tail.length).replace(/\r\n?/g, "\n") + tail;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) { addEvent(JSON.parse(data)); scheduleRefresh(); }
        }
      }
    } catch (e) { /* reconnect below */ }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

let refreshTimer = null;
function scheduleRefresh() {
  // An event means something changed: refresh soon, once for a burst of events.
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
}

// ---- Test Agent: trigger, then join the room from this browser ------------------------------

function callStatus(text) { setText($("#call-status"), text); }

function renderParticipants() {
  const room = state.call;
  const list = $("#call-participants");
  if (!room) { list.replaceChildren(); return; }
  const rows = [el("li", {}, room.localParticipant.identity + " (you)")];
  for (const p of room.remoteParticipants.values()) {
    rows.push(el("li", { "data-identity": p.identity }, p.identity + (p.isAgent ? " (agent)" : "")));
  }
  list.replaceChildren(...rows);
}

async function testAgent(evt) {
  evt.preventDefault();
  if ($("#test-agent-btn").getAttribute("aria-disabled") === "true") return;  // a start is under way
  if (state.call) await leaveCall();
  const client = $("#test-client").value.trim();
  const agent = $("#test-agent").value.trim();
  const roomName = $("#test-room").value.trim() || ("dash-" + Math.random().toString(16).slice(2, 10));
  const button = $("#test-agent-btn");
  // aria-disabled, not disabled: a disabled button drops keyboard focus to <body> while the call starts.
  button.setAttribute("aria-disabled", "true");
  callStatus("Triggering " + agent + " in " + roomName + " …");
  try {
    const r = await api("POST", "/api/v1/trigger-agent", {
      agent_slug: agent, client_id: client, room_name: roomName, user_id: "dashboard-" + Math.random().toString(16).slice(2, 8), mode: "voice",
    });
    callStatus(r.status + " " + r.container_name + "; joining " + r.room_name + " …");
    if (typeof LivekitClient === "undefined") {
      callStatus("Agent " + r.status + " in " + r.room_name + ", but the LiveKit JS client is not installed (run scripts/fetch-dashboard-assets).");
      return;
    }
    const room = new LivekitClient.Room({ adaptiveStream: true, dynacast: true });
    const E = LivekitClient.RoomEvent;
    room.on(E.TrackSubscribed, (track) => { if (track.kind === "audio") $("#call-audio").append(track.attach()); });
    room.on(E.TrackUnsubscribed, (track) => track.detach().forEach((n) => n.remove()));
    room.on(E.ParticipantConnected, renderParticipants);
    room.on(E.ParticipantDisconnected, renderParticipants);
    room.on(E.Disconnected, () => { if (state.call === room) endCall("Call ended by the server (room closed)."); });
    await room.connect(r.livekit_url, r.user_token);
    state.call = room;
    state.callRoom = r.room_name;
    $("#leave-btn").disabled = false;
    let mic = "microphone on";
    try { await room.localParticipant.setMicrophoneEnabled(true); } catch (e) { mic = "no microphone (" + e.name + "): listening only"; }
    callStatus("In call: " + r.room_name + " with " + r.agent.name + " — " + mic + ".");
    announce("In call with " + r.agent.name + " in room " + r.room_name);
    document.body.dataset.call = r.room_name;
    renderParticipants();
  } catch (e) {
    callStatus("Test Agent failed: " + e.message);
    announce("Test Agent failed: " + e.message);
  } finally {
    button.removeAttribute("aria-disabled");
    refresh();
  }
}

function endCall(text) {
  const hadFocus = $("#leave-btn") === document.activeElement;
  state.call = null;
  $("#leave-btn").disabled = true;
  if (hadFocus) $("#test-agent-btn").focus();  // a disabled button loses focus: keep it in the form
  $("#call-audio").replaceChildren();
  delete document.body.dataset.call;
  renderParticipants();
  callStatus(text);
  announce(text);
}

async function leaveCall() {
  const room = state.call;
  if (!room) return;
  state.call = null;  // first: the Disconnected handler then knows this end is ours
  await room.disconnect();
  endCall("Left " + state.callRoom + ". The agent stays for the grace period, then the room closes.");
  refresh();
}

// ---- start -----------------------------------------------------------------------------------

function start() {
  $("#api-key").value = apiKey();
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#api-key").value.trim());
    banner("");
    announce("API key set");
    refresh();
  });
  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("#api-key").value = "";
    announce("API key forgotten");
    refresh();
  });
  $("#test-form").addEventListener("submit", testAgent);
  $("#leave-btn").addEventListener("click", leaveCall);
  const form = $("#filters");
  form.addEventListener("input", onFilterChange);
  form.addEventListener("change", onFilterChange);
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("reset", () => setTimeout(onFilterChange, 0));  // after the browser has cleared the fields
  refresh();
  setInterval(refresh, POLL_MS);
  setInterval(tickGrace, 250);
  followEvents();
}
document.addEventListener("DOMContentLoaded", start);

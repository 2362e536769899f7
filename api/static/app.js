// The operator dashboard: plain JS, no build step. Data comes from the admin API with the key the
// operator types (kept in sessionStorage, so it dies with the tab); live events come from the SSE
// endpoint read with fetch(), because EventSource cannot send an Authorization header.
"use strict";

const KEY_STORAGE = "orch_api_key";
const POLL_MS = 2000;
const state = { rooms: [], graceDeadline: new Map(), lastSeq: 0, call: null, authFailed: false };
const $ = (sel) => document.querySelector(sel);

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey()) h["Authorization"] = "Bearer " + apiKey();
  return h;
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

async function api(method, path, body) {
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

function fmtAge(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}
function fmtCpu(r) { return r === null || r === undefined ? "–" : (r * 100).toFixed(1) + "%"; }
function fmtMem(b) { return b === null || b === undefined ? "–" : (b / 1048576).toFixed(1) + " MiB"; }
function roomKey(r) { return r.client_id + "/" + r.room; }

// ---- rooms ---------------------------------------------------------------------------------

function renderRooms(rows) {
  state.rooms = rows;
  const now = Date.now();
  state.graceDeadline.clear();
  for (const r of rows) {
    if (r.grace_remaining_s !== null && r.grace_remaining_s !== undefined) state.graceDeadline.set(roomKey(r), now + r.grace_remaining_s * 1000);
  }
  const body = $("#rooms tbody");
  body.replaceChildren(...rows.map((r) => el("tr", { "data-room": r.room, "data-client": r.client_id, "data-state": r.state },
    el("td", { class: "wrap" }, r.client_id),
    el("td", { class: "wrap room-name" }, r.room),
    el("td", {}, el("span", { class: "state state-" + r.state }, r.state)),
    el("td", { class: "humans" }, r.humans.length ? r.humans.join(", ") : "0"),
    el("td", { class: "agents" }, r.agents.length ? r.agents.join(", ") : "0"),
    el("td", { class: "grace", "data-key": roomKey(r) }, ""),
    el("td", {}, el("button", { class: "danger close", onclick: () => closeRoom(r) }, "Close")),
  )));
  $("#rooms-empty").hidden = rows.length > 0;
  tickGrace();
}

function tickGrace() {
  const now = Date.now();
  for (const cell of document.querySelectorAll("#rooms td.grace")) {
    const deadline = state.graceDeadline.get(cell.dataset.key);
    cell.textContent = deadline === undefined ? "" : Math.max(0, Math.ceil((deadline - now) / 1000)) + "s";
  }
}

async function closeRoom(r) {
  if (!confirm("Close room " + r.room + "? Its agent containers are stopped and the LiveKit room is deleted.")) return;
  try {
    await api("POST", "/api/v1/admin/rooms/" + encodeURIComponent(r.client_id) + "/" + encodeURIComponent(r.room) + "/close");
  } catch (e) {
    banner("Close failed: " + e.message);
  }
  refresh();
}

// ---- containers ----------------------------------------------------------------------------

function renderContainers(rows) {
  const byClient = new Map();
  for (const c of rows) {
    const k = c.client_id || "(no client label)";
    if (!byClient.has(k)) byClient.set(k, []);
    byClient.get(k).push(c);
  }
  const parts = [];
  for (const [client, list] of byClient) {
    parts.push(el("h3", {}, client + " · " + list.length + " container" + (list.length === 1 ? "" : "s")));
    parts.push(el("table", { class: "containers", "data-client": client },
      el("thead", {}, el("tr", {}, ...["Name", "Agent", "Room", "Status", "Health", "Uptime", "CPU", "Memory"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...list.map((c) => el("tr", { "data-container": c.name },
        el("td", { class: "wrap" }, c.name), el("td", {}, c.agent), el("td", { class: "wrap", title: c.job ? "launched for LiveKit job " + c.job : "" }, c.room),
        el("td", {}, el("span", { class: "state status-" + c.status }, c.status)),
        el("td", {}, el("span", { class: "state health-" + c.health }, c.health)),
        el("td", {}, c.status === "running" ? fmtAge(c.age_s) : "–"),
        el("td", { class: "cpu" }, fmtCpu(c.cpu_ratio)), el("td", { class: "mem" }, fmtMem(c.memory_bytes)),
      ))),
    ));
  }
  $("#containers").replaceChildren(...parts);
  $("#containers-empty").hidden = rows.length > 0;
  const clients = new Set(rows.map((c) => c.client_id).filter(Boolean));
  const agents = new Set(rows.map((c) => c.agent).filter(Boolean));
  $("#known-clients").replaceChildren(...[...clients].map((v) => el("option", { value: v })));
  $("#known-agents").replaceChildren(...[...agents].map((v) => el("option", { value: v })));
}

function renderStats(s) {
  $("#scope").textContent = "scope " + s.scope;
  $("#stat-rooms").textContent = s.rooms.total;
  $("#stat-grace").textContent = s.rooms.grace_period || 0;
  $("#stat-running").textContent = s.containers.running;
  $("#stat-limit").textContent = s.limits.max_agents_total;
  $("#stat-passes").textContent = s.reconciler.passes;
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [rooms, containers, stats] = await Promise.all([
      api("GET", "/api/v1/admin/rooms"), api("GET", "/api/v1/admin/containers"), api("GET", "/api/v1/admin/stats"),
    ]);
    renderRooms(rooms.rooms);
    renderContainers(containers.containers);
    renderStats(stats);
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) banner("Cannot load: " + e.message);
  } finally {
    refreshing = false;
  }
}

// ---- live events (SSE over fetch) ----------------------------------------------------------

function addEvent(ev) {
  state.lastSeq = Math.max(state.lastSeq, ev.seq);
  const failed = ev.ok === false || (ev.kind === "trigger" && ev.error);
  const item = el("li", { "data-seq": ev.seq, "data-kind": ev.kind, class: failed ? "failed" : "" },
    el("span", { class: "muted" }, new Date(ev.at).toLocaleTimeString() + " "),
    el("span", { class: "kind" }, ev.kind),
    el("span", { class: "client", title: ev.client_id || "" }, ev.client_id ? ev.client_id.slice(0, 8) : ""), " ", ev.message);
  const list = $("#events");
  list.prepend(item);
  while (list.children.length > 200) list.lastChild.remove();
}

function setLive(on) {
  const p = $("#live");
  p.className = "pill " + (on ? "on" : "off");
  p.textContent = "events: " + (on ? "live" : "off");
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

function callStatus(text) { $("#call-status").textContent = text; }

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
  if (state.call) await leaveCall();
  const client = $("#test-client").value.trim();
  const agent = $("#test-agent").value.trim();
  const roomName = $("#test-room").value.trim() || ("dash-" + Math.random().toString(16).slice(2, 10));
  $("#test-agent-btn").disabled = true;
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
    document.body.dataset.call = r.room_name;
    renderParticipants();
  } catch (e) {
    callStatus("Test Agent failed: " + e.message);
  } finally {
    $("#test-agent-btn").disabled = false;
    refresh();
  }
}

function endCall(text) {
  state.call = null;
  $("#leave-btn").disabled = true;
  $("#call-audio").replaceChildren();
  delete document.body.dataset.call;
  renderParticipants();
  callStatus(text);
}

async function leaveCall() {
  const room = state.call;
  if (!room) return;
  state.call = null;
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
    refresh();
  });
  $("#forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORAGE); $("#api-key").value = ""; refresh(); });
  $("#test-form").addEventListener("submit", testAgent);
  $("#leave-btn").addEventListener("click", leaveCall);
  refresh();
  setInterval(refresh, POLL_MS);
  setInterval(tickGrace, 250);
  followEvents();
}
document.addEventListener("DOMContentLoaded", start);

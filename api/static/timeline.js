// The last starts' timelines (GET /api/v1/starts): one row per start (trigger, restart, dispatched job, close),
// its stages drawn to scale within the start and, behind a "Stages" button, listed as text. The drawing only
// repeats the text (WCAG 1.4.1), so it is hidden from screen readers; the open/closed state of each row's list
// survives the 2 s redraw (keyed by start id, like every table here). Uses app.js's helpers (loaded first).
"use strict";

const STARTS_LIMIT = 10;
const expandedStarts = new Set();  // start ids whose stage list is open
const START_STATES = {
  created: ["●", "created", "ok"], reused: ["●", "reused", "ok"], closed: ["●", "closed", "ok"],
  running: ["◔", "running", "warn"],
};
const STAGE_STATES = { ok: ["✓", "ok", "ok"], running: ["◔", "running", "warn"] };
// An outcome the table does not know is an error code: shown as it is, as a failure.
function outcomeStates(table, value) { return table[value] ? table : { [value]: ["✕", value, "bad"] }; }

function fmtDuration(s) {
  if (s === null || s === undefined) return "running";
  return s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(2) + " s";
}
function stageLabel(name) { return name.replace(/_/g, " "); }
function stageTone(outcome) { return outcome === "ok" ? "ok" : outcome === "running" ? "warn" : "bad"; }
function startEnd(st) {
  // A stage still running counts up to the slowest one that ended (its bar then reaches the end).
  let end = 0;
  for (const m of st.stages) end = Math.max(end, m.offset_s + (m.duration_s || 0));
  return end;
}
function startTotal(st) {
  const running = st.stages.some((m) => m.duration_s === null || m.duration_s === undefined);
  return running ? "running (" + fmtDuration(startEnd(st)) + " so far)" : fmtDuration(startEnd(st));
}
function startSubject(st) {
  return st.kind + " " + (st.agent_slug || "") + " in " + (st.room || "—");
}

// The timeline cell: a bar per stage (decoration), the toggle, and the stage list (the content).
function makeTimeline(tr) {
  const bars = el("div", { class: "bars", "aria-hidden": "true" });
  const list = el("ol", { class: "stage-list" });
  const toggle = el("button", { type: "button", class: "secondary stage-toggle", "aria-expanded": "false" },
    "Stages", el("span", { class: "visually-hidden" }));
  toggle.addEventListener("click", () => {
    const id = tr._row.id;
    if (expandedStarts.has(id)) expandedStarts.delete(id); else expandedStarts.add(id);
    updateTimeline(tr.lastElementChild, tr._row);
  });
  return el("div", { class: "timeline" }, bars, toggle, list);
}

function syncChildren(parent, n, make) {
  while (parent.children.length > n) parent.lastElementChild.remove();
  while (parent.children.length < n) parent.append(make());
}

function updateTimeline(cell, st) {
  const [bars, toggle, list] = cell.firstChild.children;
  const end = startEnd(st) || 1;
  syncChildren(bars, st.stages.length, () => el("span", { class: "bar" }));
  st.stages.forEach((m, i) => {
    const bar = bars.children[i];
    const cls = "bar tone-" + stageTone(m.outcome);
    if (bar.className !== cls) bar.className = cls;
    const left = (100 * m.offset_s / end).toFixed(2) + "%";
    const width = Math.max(0.5, 100 * (m.duration_s === null || m.duration_s === undefined ? end - m.offset_s : m.duration_s) / end).toFixed(2) + "%";
    if (bar.style.left !== left) bar.style.left = left;
    if (bar.style.width !== width) bar.style.width = width;
    setAttr(bar, "title", stageLabel(m.stage) + ": " + fmtDuration(m.duration_s));
  });
  const open = expandedStarts.has(st.id);
  const listId = "start-" + st.id + "-stages";
  setAttr(list, "id", listId);
  setAttr(toggle, "aria-controls", listId);
  setAttr(toggle, "aria-expanded", String(open));
  setText(toggle.lastChild, " of start " + st.id + ": " + startSubject(st));
  if (list.hidden === open) list.hidden = !open;
  syncChildren(list, st.stages.length, () => el("li", { "data-stage": "" },
    el("span", { class: "stage-name" }), " ", el("span", { class: "took" }), " ", badge(), " ", el("span", { class: "at muted" })));
  st.stages.forEach((m, i) => {
    const li = list.children[i];
    setAttr(li, "data-stage", m.stage);
    setText(li.children[0], stageLabel(m.stage));
    setText(li.children[1], fmtDuration(m.duration_s));
    setBadge(li.children[2], m.outcome, outcomeStates(STAGE_STATES, m.outcome));
    setText(li.children[3], "at +" + fmtDuration(m.offset_s));
  });
}

const startsTable = keyedTable(document.querySelector("#starts tbody"), [
  { text: (st) => new Date(st.started_at).toLocaleTimeString(), title: (st) => st.started_at, cls: "when", rowHeader: true },
  { text: (st) => st.kind, cls: "kind" },
  { text: (st) => orDash(st.client_id), cls: "wrap client" },
  { text: (st) => orDash(st.room), cls: "wrap room" },
  { text: (st) => orDash(st.agent_slug), cls: "agent" },
  { text: (st) => st.launch, cls: "launch" },
  { make: badge, update: (cell, st) => setBadge(cell.firstChild, st.outcome, outcomeStates(START_STATES, st.outcome)), cls: "outcome" },
  { text: startTotal, cls: "total" },
  { make: makeTimeline, update: updateTimeline, cls: "stages" },
], (st) => String(st.id));

// `body`: the API's answer; null when this orchestrator has no starts API (or it failed: said in the note).
function renderStarts(body, f) {
  const starts = (body && body.starts) || [];
  for (const id of expandedStarts) if (!starts.some((st) => st.id === id)) expandedStarts.delete(id);
  startsTable.sync(starts, {
    matches: (st) => has(st.client_id, f.client) && has(st.node, f.node),
    onRow: (tr, st) => { tr.dataset.room = st.room || ""; tr.dataset.outcome = st.outcome; tr.dataset.launch = st.launch; },
    fallbackFocus: $("#starts-title"),
  });
  $("#starts-wrap").hidden = starts.length === 0;
  let note;
  if (body === null) note = "This orchestrator offers no starts API.";
  else note = starts.length ? "The last " + starts.length + " start" + (starts.length === 1 ? "" : "s") + ", newest first." : "No starts yet.";
  setText($("#starts-note"), note);
}

// liveobject review page: timeline, filters, search, 24 h summary, cameras, live events (SSE).
// Plain JavaScript, no build step, no dependencies. Every URL is relative to the page, so the
// page works under any route prefix. The API key (when the server has one) is asked for once,
// kept in sessionStorage and sent as `Authorization: Bearer`; it never goes into a URL.
"use strict";

const KEY_NAME = "liveobject.apiKey";
const NEEDS_KEY = document.documentElement.dataset.auth === "key";
const PAGE_SIZE = 50;
const MAX_SHOWN = 500; // older items are dropped from the page (they stay in the store)

const state = {
  filters: { camera_id: "", object: "", q: "" },
  cursor: null,
  shown: new Set(),
  lastEventId: null, // newest event id seen: where the live stream resumes
  stream: null, // AbortController of the open stream
  streamGen: 0,
  retry: null,
  cameras: [],
};

const $ = (id) => document.getElementById(id);

function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

function headers(extra) {
  const out = Object.assign({ Accept: "application/json" }, extra || {});
  const key = apiKey();
  if (key) out.Authorization = "Bearer " + key;
  return out;
}

class AuthError extends Error {}

function query(params) {
  const usp = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) usp.set(name, value);
  }
  const text = usp.toString();
  return text ? "?" + text : "";
}

async function getJSON(path, params) {
  const res = await fetch(path + query(params || {}), { headers: headers() });
  if (res.status === 401) throw new AuthError("key refused");
  if (!res.ok) throw new Error(path + ": HTTP " + res.status);
  return res.json();
}

// ---------------------------------------------------------------- the key

function askKey(message) {
  stopStream();
  $("key-error").textContent = message || "";
  $("key-input").value = "";
  setLive("Key required", "off");
  const dialog = $("key-dialog");
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

function onKeySubmit(event) {
  event.preventDefault();
  const value = $("key-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY_NAME, value);
  $("key-dialog").close();
  start();
}

function handleError(error, where) {
  if (error instanceof AuthError) {
    sessionStorage.removeItem(KEY_NAME);
    askKey("That key was refused. Enter the server's api.api_key.");
    return;
  }
  if (error && error.name === "AbortError") return;
  $("list-status").textContent = where + " failed: " + error.message;
}

// ---------------------------------------------------------------- the timeline

function thumbnailSrc(ev) {
  // Same route, relative to this page; keep the signed token of thumbnail_url when there is one.
  let search = "";
  try {
    search = new URL(ev.thumbnail_url, location.href).search;
  } catch (e) {
    search = "";
  }
  return "api/v1/events/" + encodeURIComponent(ev.event_id) + "/thumbnail" + search;
}

function eventItem(ev, fresh) {
  const li = document.createElement("li");
  li.className = "event" + (fresh ? " fresh" : "");
  li.tabIndex = 0;
  li.dataset.eventId = ev.event_id;
  li.dataset.ts = ev.timestamp;
  const img = document.createElement("img");
  img.src = thumbnailSrc(ev);
  img.alt = ev.description || "Event on " + ev.camera_name;
  img.width = 160;
  img.height = 90;
  img.loading = "lazy";
  img.decoding = "async";
  const body = document.createElement("div");
  const meta = document.createElement("p");
  meta.className = "meta";
  const time = document.createElement("time");
  time.dateTime = ev.timestamp;
  time.textContent = new Date(ev.timestamp).toLocaleString();
  meta.append(time, " · " + ev.camera_name);
  if (ev.is_doorbell_ring) meta.append(" · doorbell ring");
  const desc = document.createElement("p");
  desc.className = "desc";
  desc.textContent = ev.description;
  const objects = document.createElement("p");
  objects.className = "meta objects";
  for (const name of ev.objects_detected || []) {
    const chip = document.createElement("span");
    chip.textContent = name;
    objects.append(chip);
  }
  body.append(meta, desc, objects);
  li.append(img, body);
  li.setAttribute("aria-label", ev.camera_name + ", " + time.textContent + ": " + ev.description);
  return li;
}

function addEvent(ev, live) {
  if (state.shown.has(ev.event_id)) return;
  state.shown.add(ev.event_id);
  const list = $("events");
  const item = eventItem(ev, live);
  if (!live) {
    list.append(item);
    return;
  }
  // Live events go where their time puts them (newest first).
  let before = null;
  for (const other of list.children) {
    if (other.dataset.ts < ev.timestamp) {
      before = other;
      break;
    }
  }
  list.insertBefore(item, before);
  while (list.children.length > MAX_SHOWN) {
    state.shown.delete(list.lastElementChild.dataset.eventId);
    list.lastElementChild.remove();
  }
}

async function loadEvents(reset) {
  if (reset) {
    state.cursor = null;
    state.shown.clear();
    state.lastEventId = null;
    $("events").replaceChildren();
  }
  $("list-status").textContent = "Loading…";
  const data = await getJSON("api/v1/events", Object.assign({ limit: PAGE_SIZE, cursor: state.cursor }, state.filters));
  for (const ev of data.events) addEvent(ev, false);
  if (reset && data.events.length) state.lastEventId = data.events[0].event_id;
  state.cursor = data.next_cursor;
  $("more").hidden = !state.cursor;
  const count = $("events").children.length;
  $("list-status").textContent = count ? count + " event" + (count === 1 ? "" : "s") + " shown" : "No events match.";
}

// ---------------------------------------------------------------- the live stream (SSE)

function setLive(text, kind) {
  const el = $("live");
  el.textContent = text;
  el.className = "live " + (kind || "");
}

function stopStream() {
  state.streamGen += 1;
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearTimeout(state.retry);
}

function scheduleStream(delayMs) {
  clearTimeout(state.retry);
  const gen = state.streamGen;
  state.retry = setTimeout(() => {
    if (gen === state.streamGen) openStream();
  }, delayMs);
}

async function openStream() {
  stopStream();
  const gen = state.streamGen;
  const controller = new AbortController();
  state.stream = controller;
  const extra = { Accept: "text/event-stream" };
  if (state.lastEventId) extra["Last-Event-ID"] = state.lastEventId;
  let ended = "closed";
  try {
    const res = await fetch("api/v1/events/stream" + query(state.filters), {
      headers: headers(extra),
      signal: controller.signal,
      cache: "no-store",
    });
    if (res.status === 401) throw new AuthError("key refused");
    if (!res.ok || !res.body) throw new Error("stream: HTTP " + res.status);
    setLive("Live", "on");
    ended = await readStream(res.body, gen);
  } catch (error) {
    if (gen !== state.streamGen || (error && error.name === "AbortError")) return;
    if (error instanceof AuthError) return handleError(error, "stream");
    ended = "error";
  }
  if (gen !== state.streamGen) return;
  if (ended === "resume") return openStream(); // the server asked: resume at once
  if (ended === "gap") {
    loadEvents(true).then(() => openStream(), (e) => handleError(e, "reload"));
    return;
  }
  setLive("Reconnecting…", "off");
  scheduleStream(3000);
}

async function readStream(body, gen) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || gen !== state.streamGen) return "closed";
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const outcome = handleMessage(block);
      if (outcome) {
        reader.cancel().catch(() => {});
        return outcome;
      }
    }
  }
}

function handleMessage(block) {
  let kind = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comment: heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") kind = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const payload = JSON.parse(data.join("\n"));
  if (kind === "message") {
    if (id) state.lastEventId = id;
    addEvent(payload, true);
    const count = $("events").children.length;
    $("list-status").textContent = count + " event" + (count === 1 ? "" : "s") + " shown · new: " + payload.camera_name;
    scheduleSummary();
    return null;
  }
  if (kind === "resume") {
    if (payload.last_event_id) state.lastEventId = payload.last_event_id;
    return "resume";
  }
  if (kind === "gap") return "gap";
  return null;
}

// ---------------------------------------------------------------- summary and cameras

let summaryTimer = null;

function scheduleSummary() {
  clearTimeout(summaryTimer);
  summaryTimer = setTimeout(() => loadSummary().catch((e) => handleError(e, "summary")), 5000);
}

function countItems(list, entries) {
  list.replaceChildren();
  for (const [label, count] of entries) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = label;
    const n = document.createElement("span");
    n.textContent = String(count);
    li.append(name, n);
    list.append(li);
  }
}

async function loadSummary() {
  const data = await getJSON("api/v1/summary", { since: "24h", camera_id: state.filters.camera_id, examples: 3 });
  const parts = [data.total + " event" + (data.total === 1 ? "" : "s") + " in the last 24 hours."];
  if (data.last_event) {
    const last = data.last_event;
    parts.push("Last: " + new Date(last.timestamp).toLocaleString() + ", " + last.camera_name + ": " + last.description);
  }
  $("summary-text").textContent = parts.join(" ");
  const facts = $("summary-facts");
  facts.replaceChildren();
  const busiest = data.busiest_hour ? new Date(data.busiest_hour.hour).toLocaleString() + " (" + data.busiest_hour.count + ")" : "—";
  const rows = [
    ["Events", data.total],
    ["Busiest hour", busiest],
    ["Doorbell rings", data.rings],
    ["Reused", data.reused],
    ["Fallback text", data.fallback],
    ["Filtered", data.filtered],
    ["Throttled", data.throttled],
  ];
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    facts.append(dt, dd);
  }
  countItems($("summary-cameras"), data.cameras.map((c) => [c.camera_name, c.count]));
  countItems($("summary-objects"), data.objects.map((o) => [o.object, o.count]));
  countItems($("summary-examples"), data.examples.map((e) => [e.description, "×" + e.similar_events]));
}

async function loadCameras() {
  const data = await getJSON("api/v1/cameras");
  state.cameras = data.cameras;
  const list = $("cameras");
  list.replaceChildren();
  for (const cam of data.cameras) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = cam.camera_name;
    const badge = document.createElement("span");
    const status = String(cam.status || "unknown");
    badge.className = "badge " + status.replace(/[^a-z]/g, "");
    badge.textContent = status + (cam.fps ? " · " + Number(cam.fps).toFixed(1) + " fps" : "");
    li.append(name, badge);
    list.append(li);
  }
  const select = $("filter-camera");
  const chosen = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const cam of data.cameras) select.add(new Option(cam.camera_name, cam.camera_id));
  select.value = chosen;
}

// ---------------------------------------------------------------- filters and keys

function readFilters() {
  state.filters = {
    camera_id: $("filter-camera").value,
    object: $("filter-object").value,
    q: $("filter-q").value.trim(),
  };
}

async function applyFilters() {
  readFilters();
  stopStream();
  try {
    await loadEvents(true);
    openStream();
    loadSummary().catch((e) => handleError(e, "summary"));
  } catch (error) {
    handleError(error, "events");
  }
}

function moveFocus(step) {
  const items = Array.from($("events").children);
  if (!items.length) return;
  const at = items.indexOf(document.activeElement);
  const next = at < 0 ? 0 : Math.min(items.length - 1, Math.max(0, at + step));
  items[next].focus();
}

function onKey(event) {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "/" && !typing) {
    event.preventDefault();
    $("filter-q").focus();
  } else if (!typing && (event.key === "j" || event.key === "ArrowDown")) {
    event.preventDefault();
    moveFocus(1);
  } else if (!typing && (event.key === "k" || event.key === "ArrowUp")) {
    event.preventDefault();
    moveFocus(-1);
  }
}

// ---------------------------------------------------------------- a linked event (#event=<id>)
// A notification's tap (the Home Assistant blueprint) opens `/#event=<id>`: that event is shown
// (fetched when the list does not hold it), marked and focused.

function linkedId() {
  const match = /^#event=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(location.hash);
  return match ? match[1] : null;
}

async function showLinked() {
  const id = linkedId();
  if (!id) return;
  const find = () => $("events").querySelector('li[data-event-id="' + id + '"]');
  if (!find()) {
    const res = await fetch("api/v1/events/" + id, { headers: headers() });
    if (res.status === 401) throw new AuthError("key refused");
    if (res.status === 404) {
      $("list-status").textContent = "The linked event is no longer stored.";
      return;
    }
    if (!res.ok) throw new Error("event: HTTP " + res.status);
    const ev = await res.json();
    addEvent(ev, true);
    if (!find()) {
      // older than the most the page keeps: shown at the end anyway (until the next trim)
      state.shown.add(ev.event_id);
      $("events").append(eventItem(ev, false));
    }
  }
  const item = find();
  if (!item) return;
  for (const other of document.querySelectorAll(".event.linked")) other.classList.remove("linked");
  item.classList.add("linked");
  item.scrollIntoView({ block: "center" });
  item.focus();
}

async function start() {
  if (NEEDS_KEY && !apiKey()) return askKey("");
  setLive("Connecting…", "");
  try {
    await loadCameras();
    await loadEvents(true);
    await showLinked().catch((e) => handleError(e, "linked event"));
    openStream();
    await loadSummary();
  } catch (error) {
    handleError(error, "loading");
  }
}

function init() {
  $("key-form").addEventListener("submit", onKeySubmit);
  $("key-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("key-button").hidden = !NEEDS_KEY;
  $("key-button").addEventListener("click", () => askKey(""));
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  $("filters").addEventListener("reset", () => setTimeout(applyFilters, 0));
  $("filter-camera").addEventListener("change", applyFilters);
  $("filter-object").addEventListener("change", applyFilters);
  $("more").addEventListener("click", () => loadEvents(false).catch((e) => handleError(e, "events")));
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => showLinked().catch((e) => handleError(e, "linked event")));
  setInterval(() => loadCameras().catch((e) => handleError(e, "cameras")), 15000);
  setInterval(() => loadSummary().catch((e) => handleError(e, "summary")), 60000);
  start();
}

init();

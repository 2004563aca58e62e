// Room page: live chat over a WebSocket, with history on entry and
// reconnection that never shows a message twice.
// Security rule: message data only ever goes into the DOM via textContent.
"use strict";

(() => {
  const room = JSON.parse(document.getElementById("room-name").textContent);

  const log = document.getElementById("log");
  const logEmpty = document.getElementById("log-empty");
  const jump = document.getElementById("jump");
  const statusEl = document.getElementById("status");
  const statusText = document.getElementById("status-text");
  const errorBox = document.getElementById("error");
  const errorText = document.getElementById("error-text");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");
  const senderInput = document.getElementById("sender-input");

  const SOURCE_LABELS = { websocket: "browser", mqtt: "device", email: "email", http: "API" };
  const SENDER_KEY = "chat.sender";
  const SENDER_MAX = 200; // the server keeps this many characters of a name
  const MIN_DELAY = 1000;
  const MAX_DELAY = 15000;
  // Close code 1012 (service restart): the server is being replaced and asks everyone back. Come back
  // soon, spread over a short window so the new process is not met by every tab in the same instant.
  const SERVICE_RESTART = 1012;
  const RESTART_MIN = 200;
  const RESTART_SPREAD = 1800;
  const RENAME_DEBOUNCE = 700;

  const seen = new Set(); // ids already rendered (history and live overlap on reconnect)
  let lastId = null; // highest id seen (or the last history's last_id), sent as ?after= on reconnect
  let lastDay = ""; // for day dividers
  let socket = null;
  let delay = MIN_DELAY;
  let retryTimer = null;
  let everConnected = false;
  let everJoined = false;
  let unread = 0;
  const baseTitle = document.title;

  // ---- sender name, remembered across visits (storage may be blocked) ----
  try {
    senderInput.value = localStorage.getItem(SENDER_KEY) || "anonymous";
  } catch (e) {
    senderInput.value = "anonymous";
  }
  // The name as the server will store it.
  const currentSender = () => senderInput.value.trim().slice(0, SENDER_MAX).trim() || "anonymous";
  let connectedAs = currentSender(); // the name on the open socket's URL (presence)
  let renameTimer = null;
  senderInput.addEventListener("input", () => {
    try {
      localStorage.setItem(SENDER_KEY, senderInput.value.trim());
    } catch (e) {
      /* not fatal: the name just won't be remembered */
    }
    // Once the user stops typing: mark "mine" anew and rejoin under the new name (catching up by id).
    clearTimeout(renameTimer);
    renameTimer = setTimeout(() => {
      markMine();
      rename();
    }, RENAME_DEBOUNCE);
  });
  function rename() {
    if (currentSender() === connectedAs || !socket || socket.readyState !== WebSocket.OPEN) return;
    // Not while a message is on its way: its echo must come back on the socket that sent it.
    if (inFlight.length) renameTimer = setTimeout(rename, RENAME_DEBOUNCE);
    else reconnectNow();
  }

  // ---- status / errors ----
  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusText.textContent = text;
  }

  function showError(text) {
    errorText.textContent = text;
    errorBox.hidden = false;
  }
  document.getElementById("error-close").addEventListener("click", () => {
    errorBox.hidden = true;
    input.focus();
  });

  // ---- rendering ----
  const isAtBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const scrollToBottom = () => {
    log.scrollTop = log.scrollHeight;
    jump.hidden = true;
  };
  // Whether the reader follows the newest message; kept across layout changes (panels opening,
  // charts appearing, the textarea growing, a phone keyboard), which would otherwise leave them behind.
  let following = true;
  log.addEventListener("scroll", () => {
    following = isAtBottom();
    if (following) jump.hidden = true;
  });
  if (typeof ResizeObserver !== "undefined") {
    new ResizeObserver(() => {
      if (following) log.scrollTop = log.scrollHeight;
    }).observe(log);
  }
  jump.addEventListener("click", scrollToBottom);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // Stable colour per sender name, so conversations are easy to follow.
  function hue(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function formatValue(v) {
    if (v === null || typeof v !== "object") return String(v);
    return JSON.stringify(v);
  }

  function addDayDivider(date) {
    const day = date.toDateString();
    if (day === lastDay) return;
    lastDay = day;
    const today = new Date().toDateString();
    const label = day === today ? "Today" : date.toLocaleDateString(undefined, { dateStyle: "full" });
    log.append(el("div", "day-divider", label));
  }

  // Message text as text nodes, with http(s) links as real links: never HTML from a message.
  const LINK = /\bhttps?:\/\/[^\s<>"']+/gi;
  function textWithLinks(text) {
    const p = el("p", "text");
    let last = 0;
    for (const match of text.matchAll(LINK)) {
      let href = match[0].replace(/[.,;:!?)\]]+$/, ""); // trailing punctuation is prose, not URL
      let url;
      try {
        url = new URL(href);
      } catch (e) {
        continue;
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") continue;
      p.append(text.slice(last, match.index));
      const a = el("a", "", href);
      a.href = url.href;
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      p.append(a);
      last = match.index + href.length;
    }
    p.append(text.slice(last));
    return p;
  }

  // Only the gateway's own attachment URLs (a path on this origin): never a link a message makes up.
  const ATTACHMENT_URL = /^\/api\/rooms\/[A-Za-z0-9_-]{1,64}\/attachments\/[0-9a-f-]{36}\/[^/?#]*$/;
  const PREVIEWED = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"]);

  function formatSize(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) return "";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / (1024 * 1024)).toFixed(1) + " MB";
  }

  function attachmentList(attachments) {
    const list = el("ul", "attachments");
    for (const file of attachments) {
      if (!file || typeof file !== "object" || typeof file.url !== "string" || !ATTACHMENT_URL.test(file.url)) continue;
      const name = String(file.name || "attachment");
      const type = String(file.type || "");
      const entry = el("li", "attachment");
      entry.dataset.type = type;
      if (PREVIEWED.has(type)) {
        const preview = el("a", "attachment-preview");
        preview.href = file.url;
        preview.target = "_blank";
        preview.rel = "noopener";
        const img = el("img");
        img.src = file.url;
        img.alt = name;
        img.loading = "lazy";
        preview.append(img);
        entry.append(preview);
      }
      const link = el("a", "attachment-link", "📎 " + name);
      link.href = file.url;
      link.download = name;
      const size = formatSize(Number(file.size));
      entry.append(link);
      if (size) entry.append(" ", el("span", "attachment-size", size));
      list.append(entry);
    }
    return list.childElementCount ? list : null;
  }

  function markMine() {
    const me = currentSender();
    for (const item of log.querySelectorAll(".message")) {
      item.classList.toggle("mine", item.dataset.sender === me);
    }
  }

  function render(msg, prepend) {
    const id = Number(msg.id);
    if (!Number.isFinite(id) || seen.has(id)) return false;
    seen.add(id);
    if (lastId === null || id > lastId) lastId = id;

    const source = String(msg.source || "unknown");
    const sender = String(msg.sender || "anonymous");
    const text = msg.message == null ? "" : String(msg.message);
    const date = new Date(msg.ts);
    const validDate = !Number.isNaN(date.getTime());
    if (validDate && !prepend) addDayDivider(date);

    const item = el("article", "message");
    item.dataset.id = String(id);
    item.dataset.source = source;
    item.dataset.sender = sender;

    const meta = el("header", "meta");
    const who = el("span", "sender", sender);
    who.style.setProperty("--hue", hue(sender));
    const badge = el("span", "badge", SOURCE_LABELS[source] || source);
    badge.dataset.source = source;
    badge.title = "Sent via " + source;
    meta.append(who, " ", badge);
    if (validDate) {
      const time = el("time", "time", date.toLocaleTimeString());
      time.dateTime = date.toISOString();
      time.title = date.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
      meta.append(" ", time);
    }
    if (sender === currentSender()) item.classList.add("mine");
    item.append(meta, textWithLinks(text));

    // A mail's files (data.attachments): links, and previews of images.
    let data = msg.data && typeof msg.data === "object" && !Array.isArray(msg.data) ? msg.data : null;
    if (data && source === "email" && Array.isArray(data.attachments)) {
      const files = attachmentList(data.attachments);
      if (files) item.append(files);
      data = null;
    }
    // Structured device readings: compact "key: value" list under the text.
    // (Not when the text already says it all, as a device reading's rendering does.)
    const saysItAll = (d) => Object.entries(d).every(([k, v]) => text.includes(k) && text.includes(formatValue(v)));
    if (data && Object.keys(data).length && !saysItAll(data)) {
      const dl = el("dl", "data");
      for (const [key, value] of Object.entries(data)) {
        const row = el("div", "data-row");
        row.append(el("dt", "", key), el("dd", "", formatValue(value)));
        dl.append(row);
      }
      item.append(dl);
    }
    if (source === "mqtt") seeDevice(sender, validDate ? date : null);
    if (data) plotReading(id, data, validDate ? date : null);

    if (prepend) log.insertBefore(item, log.firstChild);
    else log.append(item);
    logEmpty.hidden = true;

    if (source === "websocket") delivered(sender, text);
    return true;
  }

  // Render a batch, then keep the reader's scroll position sensible:
  // follow the bottom only if they were already there.
  function addMessages(list, forceScroll) {
    const wasAtBottom = isAtBottom();
    let added = 0;
    for (const msg of list) if (render(msg)) added += 1;
    if (!added) return;
    if (forceScroll || wasAtBottom) scrollToBottom();
    else jump.hidden = false;
    if (document.hidden) {
      unread += added;
      document.title = "(" + unread + ") " + baseTitle;
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      document.title = baseTitle;
    }
  });

  // ---- who is here: browsers and recent devices from presence events, devices also from what they post ----
  const presenceList = document.getElementById("presence");
  let browsers = [];
  const devices = new Map(); // name -> last seen (Date)
  const DEVICE_RECENT_MS = 10 * 60 * 1000;

  function seeDevice(name, when) {
    if (!when || Date.now() - when > DEVICE_RECENT_MS) return;
    if (!devices.has(name) || devices.get(name) < when) devices.set(name, when);
    renderPresence();
  }

  function presenceItem(className, name, kind, detail) {
    const li = el("li", className);
    li.append(el("span", "name", name));
    if (detail) li.append(el("span", "presence-detail", detail));
    li.append(el("span", "visually-hidden", " (" + kind + ")"));
    return li;
  }

  function renderPresence() {
    const now = Date.now();
    for (const [name, when] of devices) if (now - when > DEVICE_RECENT_MS) devices.delete(name);
    presenceList.replaceChildren();
    for (const b of browsers) {
      const count = Number(b.count) || 1;
      const li = presenceItem("presence-browser", String(b.name), "in a browser", count > 1 ? "×" + count : "");
      li.title = count > 1 ? count + " browser tabs" : "In a browser";
      presenceList.append(li);
    }
    for (const [name, when] of [...devices].sort((a, b) => a[0].localeCompare(b[0]))) {
      const li = presenceItem("presence-device", name, "device, last heard " + when.toLocaleTimeString());
      li.title = "Device, last heard " + when.toLocaleTimeString();
      presenceList.append(li);
    }
    if (!presenceList.children.length) presenceList.append(el("li", "muted", "Nobody yet"));
  }
  setInterval(renderPresence, 60 * 1000); // devices drop off after 10 quiet minutes

  // ---- device readings as live charts, one per numeric field ----
  const chartsPanel = document.getElementById("charts-panel");
  const chartsBox = document.getElementById("charts");
  const charts = new Map(); // field -> {chart, latest, points: [{id, date, value}] sorted by id}
  const MAX_POINTS = 200;

  function cssVar(name, fallback) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  }

  function timeLabel(date) {
    return date ? date.toLocaleTimeString() : "";
  }

  function plotReading(id, data, date) {
    if (typeof Chart === "undefined") return; // vendored script missing: the text still shows
    for (const [field, value] of Object.entries(data)) {
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      let entry = charts.get(field);
      if (!entry) charts.set(field, (entry = makeChart(field)));
      // Keep points in id order: "Load earlier" brings older readings after newer ones.
      const points = entry.points;
      let at = points.length;
      while (at > 0 && points[at - 1].id > id) at -= 1;
      points.splice(at, 0, { id, date, value });
      if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
      entry.chart.data.labels = points.map((p) => timeLabel(p.date));
      entry.chart.data.datasets[0].data = points.map((p) => p.value);
      entry.chart.update("none");
      const newest = points[points.length - 1];
      entry.value.textContent = String(newest.value);
      entry.time.textContent = newest.date ? "at " + timeLabel(newest.date) : "";
      if (newest.date) entry.time.dateTime = newest.date.toISOString();
    }
  }

  function makeChart(field) {
    chartsPanel.hidden = false;
    const box = el("figure", "chart-box");
    const latest = el("figcaption", "chart-latest");
    latest.dataset.field = field;
    const value = el("strong", "chart-value");
    const time = el("time", "chart-time");
    latest.append(el("span", "chart-field", field), ": ", value, " ", time);
    const holder = el("div", "chart");
    const canvas = document.createElement("canvas");
    canvas.dataset.field = field;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Chart of " + field + " over time");
    holder.append(canvas);
    box.append(latest, holder);
    chartsBox.append(box);
    const text = cssVar("--muted", "#5a6270");
    const grid = cssVar("--border", "#d5d9e0");
    const line = cssVar("--accent", "#2456c7");
    const chart = new Chart(canvas, {
      type: "line",
      data: {
        labels: [],
        datasets: [{ label: field, data: [], borderColor: line, backgroundColor: line, tension: 0.2, pointRadius: 2 }],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: {
          x: { ticks: { color: text, maxRotation: 0, autoSkip: true, maxTicksLimit: 4 }, grid: { color: grid } },
          y: { ticks: { color: text, maxTicksLimit: 5 }, grid: { color: grid } },
        },
      },
    });
    return { chart, value, time, latest, points: [] };
  }

  // ---- older messages on demand ----
  const loadEarlier = document.getElementById("load-earlier");
  const PAGE = 50;
  let oldestId = null;
  loadEarlier.addEventListener("click", async () => {
    if (oldestId === null) return;
    loadEarlier.disabled = true;
    loadEarlier.textContent = "Loading…";
    try {
      const url = "/api/rooms/" + encodeURIComponent(room) + "/messages?limit=" + PAGE + "&before=" + oldestId;
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const older = (await response.json()).messages || [];
      const height = log.scrollHeight;
      const top = log.scrollTop;
      for (const msg of older.slice().reverse()) render(msg, true);
      log.scrollTop = top + (log.scrollHeight - height); // keep the reader where they were
      if (older.length) oldestId = older[0].id;
      loadEarlier.hidden = older.length < PAGE;
    } catch (e) {
      showError("Could not load earlier messages: " + e.message);
    } finally {
      loadEarlier.disabled = false;
      loadEarlier.textContent = "Load earlier messages";
    }
  });

  // ---- copy buttons of the "post here from elsewhere" panel ----
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) {
      // No clipboard API (plain http on another host) or no permission: the old way.
      const area = el("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (err) {
        ok = false;
      }
      area.remove();
      return ok;
    }
  }

  const copyStatus = document.getElementById("copy-status");
  for (const button of document.querySelectorAll("#post-elsewhere .copy")) {
    const label = button.textContent;
    let timer = null;
    button.addEventListener("click", async () => {
      const code = document.getElementById(button.getAttribute("aria-controls")) || button.previousElementSibling;
      const ok = await copyText(code.textContent);
      button.textContent = ok ? "Copied" : "Select and copy";
      if (!ok) getSelection().selectAllChildren(code);
      if (copyStatus) copyStatus.textContent = ok ? "Copied to the clipboard" : "Could not copy: the text is selected, copy it yourself";
      clearTimeout(timer);
      timer = setTimeout(() => (button.textContent = label), 2000);
    });
  }

  // ---- sending: each message waits for its echo, or is marked failed with a Retry button ----
  let refs = 0;
  let inFlight = []; // payloads sent (or queued while connecting), waiting for their echo or an error
  const failed = new Map(); // failed item -> payload

  // Our message came back from the room: it is no longer waiting. If it had been marked failed
  // (its connection dropped before the echo), it was posted after all: drop the failed copy.
  function delivered(sender, text) {
    const at = inFlight.findIndex((p) => p.sender === sender && p.message === text);
    if (at >= 0) {
      inFlight.splice(at, 1);
      return;
    }
    for (const [item, payload] of failed) {
      if (payload.sender === sender && payload.message === text) {
        forgetFailed(item);
        return;
      }
    }
  }

  function forgetFailed(item) {
    if (!failed.delete(item)) return;
    item.remove();
    updateStatusNote();
  }

  function transmit(payload) {
    payload.ref = payload.ref || "c" + Date.now().toString(36) + "-" + (refs += 1);
    if (socket && socket.readyState === WebSocket.OPEN) {
      payload.onSocket = socket;
      socket.send(JSON.stringify({ message: payload.message, sender: payload.sender, ref: payload.ref }));
      inFlight.push(payload);
    } else if (socket && socket.readyState === WebSocket.CONNECTING) {
      payload.onSocket = null; // goes out when this socket opens, or fails if it never does
      inFlight.push(payload);
    } else {
      markFailed(payload, "not connected");
    }
  }

  // Show a message that did not reach the room, in the log, with a Retry button.
  function markFailed(payload, reason) {
    const item = el("article", "message mine failed");
    item.dataset.source = "websocket";
    item.dataset.sender = payload.sender;
    const meta = el("header", "meta");
    const who = el("span", "sender", payload.sender);
    who.style.setProperty("--hue", hue(payload.sender));
    const note = el("span", "failed-note", "Not sent" + (reason ? ": " + reason : ""));
    const retry = el("button", "retry", "Retry");
    retry.type = "button";
    retry.setAttribute("aria-label", "Retry sending: " + payload.message.slice(0, 60));
    meta.append(who, " ", note, " ", retry);
    item.append(meta, textWithLinks(payload.message));
    failed.set(item, payload);
    updateStatusNote();
    retry.addEventListener("click", () => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        showError("Still not connected: retry once the status says Connected.");
        return;
      }
      forgetFailed(item);
      transmit({ message: payload.message, sender: payload.sender });
      input.focus();
    });
    const stick = isAtBottom();
    log.append(item);
    logEmpty.hidden = true;
    if (stick) scrollToBottom();
  }

  // An error frame answers the oldest message still waiting (the server handles frames in order).
  function failOldest(reason) {
    const payload = inFlight.shift();
    if (payload) markFailed(payload, reason);
    return Boolean(payload);
  }

  // After (re)joining, the history holds everything posted since lastId: whatever we sent on an
  // earlier socket and did not see come back was lost with that socket.
  function failLostWith(current) {
    const lost = inFlight.filter((p) => p.onSocket && p.onSocket !== current);
    inFlight = inFlight.filter((p) => !lost.includes(p));
    for (const payload of lost) markFailed(payload, "the connection dropped");
  }

  function sendQueued(ws) {
    for (const payload of inFlight) {
      if (payload.onSocket === null) {
        payload.onSocket = ws;
        ws.send(JSON.stringify({ message: payload.message, sender: payload.sender, ref: payload.ref }));
      }
    }
  }

  function failQueued() {
    const queued = inFlight.filter((p) => p.onSocket === null);
    inFlight = inFlight.filter((p) => p.onSocket !== null);
    for (const payload of queued) markFailed(payload, "not connected");
  }

  // ---- connection ----
  const pendingNote = () => (failed.size ? " · " + failed.size + " unsent" : "");
  let statusBase = ["connecting", "Connecting…"];
  function updateStatusNote() {
    setStatus(statusBase[0], statusBase[1] + pendingNote());
  }
  function status(state, text) {
    statusBase = [state, text];
    updateStatusNote();
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let url = scheme + location.host + "/ws/chat/" + encodeURIComponent(room) + "/";
    url += "?name=" + encodeURIComponent(currentSender());
    if (lastId !== null) url += "&after=" + encodeURIComponent(lastId);
    return url;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    status("connecting", everConnected ? "Reconnecting…" : "Connecting…");

    connectedAs = currentSender();
    const ws = new WebSocket(socketUrl());
    socket = ws;

    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      everConnected = true;
      status("connected", "Connected");
      sendQueued(ws);
    });

    ws.addEventListener("message", (event) => {
      if (socket !== ws) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return; // ignore anything that is not JSON
      }
      if (data.type === "history") {
        delay = MIN_DELAY; // healthy again: the next outage starts from 1s
        const batch = Array.isArray(data.messages) ? data.messages : [];
        if (oldestId === null && batch.length) {
          oldestId = batch[0].id;
          loadEarlier.hidden = batch.length < PAGE;
        }
        addMessages(batch, !everJoined);
        // Where this connection stands, even when the history is empty: seeing no message before the next
        // reconnect, we still ask for everything after it rather than for the newest few.
        const stands = Number(data.last_id);
        if (Number.isFinite(stands) && (lastId === null || stands > lastId)) lastId = stands;
        everJoined = true;
        failLostWith(ws);
        if (!seen.size) logEmpty.textContent = "No messages yet. Say hello!";
      } else if (data.type === "message") {
        addMessages([data], false);
      } else if (data.type === "presence") {
        browsers = Array.isArray(data.browsers) ? data.browsers : [];
        for (const d of Array.isArray(data.devices) ? data.devices : []) {
          const when = new Date(d.last_seen);
          const name = d && d.name ? String(d.name) : "";
          if (name && !Number.isNaN(when.getTime()) && !(devices.get(name) > when)) devices.set(name, when);
        }
        renderPresence();
      } else if (data.type === "error") {
        const reason = String(data.error || "Something went wrong.");
        const mine = data.ref ? inFlight.findIndex((p) => p.ref === data.ref) : -1;
        if (mine >= 0) markFailed(inFlight.splice(mine, 1)[0], reason);
        else failOldest(reason);
        showError(reason);
      }
    });

    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      socket = null;
      failQueued();
      if (event.code === SERVICE_RESTART) reconnectAfterRestart();
      else scheduleReconnect();
    });
    // "error" is always followed by "close", which handles the retry.
  }

  // Rejoin at once (a new name): the old socket is let go quietly, the new one catches up by id.
  function reconnectNow() {
    const old = socket;
    socket = null;
    if (old) old.close(1000, "renamed");
    connect();
  }

  function scheduleReconnect() {
    // Exponential backoff with jitter, so a restarted server isn't hit by every tab at once.
    const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
    delay = Math.min(delay * 2, MAX_DELAY);
    // Set once (no per-second countdown) so screen readers aren't flooded.
    status("disconnected", "Disconnected, retrying in " + Math.max(1, Math.round(wait / 1000)) + "s…");
    retryTimer = setTimeout(connect, wait);
  }

  // The server said it is restarting: back in 0.2-2 s, not the backoff's 1, 2, 4 s (which stays for
  // attempts that fail, e.g. while the new process is not answering yet).
  function reconnectAfterRestart() {
    const wait = Math.round(RESTART_MIN + Math.random() * RESTART_SPREAD);
    status("disconnected", "The server is restarting, reconnecting…");
    retryTimer = setTimeout(connect, wait);
  }

  // Coming back online or to the tab: don't wait out the backoff.
  const reconnectSoon = () => {
    if (!socket && retryTimer) connect();
  };
  window.addEventListener("online", reconnectSoon);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) reconnectSoon();
  });

  // ---- composer ----
  // Grow the textarea with its content (CSS caps it); the log shrinks, so
  // stay pinned to the bottom if the reader was there.
  function autosize() {
    const stick = isAtBottom();
    input.style.height = "auto";
    input.style.height = input.scrollHeight + 2 + "px";
    if (stick) log.scrollTop = log.scrollHeight;
  }
  input.addEventListener("input", autosize);

  function send() {
    const text = input.value;
    if (!text.trim()) return; // never send empty / whitespace-only messages
    transmit({ message: text, sender: currentSender() });
    errorBox.hidden = true;
    input.value = "";
    autosize();
    input.focus();
    scrollToBottom(); // the echo of our own message should always be visible
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter inserts a newline; ignore Enter while an IME is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      send();
    }
  });

  connect();
})();

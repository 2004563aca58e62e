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
  const MIN_DELAY = 1000;
  const MAX_DELAY = 10000;

  const seen = new Set(); // ids already rendered (history and live overlap on reconnect)
  let lastId = null; // highest id seen, sent as ?after= on reconnect
  let lastDay = ""; // for day dividers
  let socket = null;
  let delay = MIN_DELAY;
  let retryTimer = null;
  let outbox = []; // messages that could not be sent, waiting for the user to retry
  let lastSent = null; // {message, sender, at}: restored into the textarea if the server rejects it
  let everConnected = false;
  let unread = 0;
  const baseTitle = document.title;

  // ---- sender name, remembered across visits (storage may be blocked) ----
  try {
    senderInput.value = localStorage.getItem(SENDER_KEY) || "anonymous";
  } catch (e) {
    senderInput.value = "anonymous";
  }
  senderInput.addEventListener("input", () => {
    try {
      localStorage.setItem(SENDER_KEY, senderInput.value.trim());
    } catch (e) {
      /* not fatal: the name just won't be remembered */
    }
  });
  const currentSender = () => senderInput.value.trim() || "anonymous";
  let renameTimer = null;
  senderInput.addEventListener("input", () => {
    // Presence shows the new name once the user stops typing: reconnect (catching up by id).
    clearTimeout(renameTimer);
    renameTimer = setTimeout(() => socket && socket.close(), 800);
  });

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
  });

  // ---- rendering ----
  const isAtBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const scrollToBottom = () => {
    log.scrollTop = log.scrollHeight;
    jump.hidden = true;
  };
  log.addEventListener("scroll", () => {
    if (isAtBottom()) jump.hidden = true;
  });
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
  function textWithLinks(text) {
    const p = el("p", "text");
    let last = 0;
    for (const match of text.matchAll(/https?:\/\/[^\s<>"']+/g)) {
      p.append(text.slice(last, match.index));
      const a = el("a", "", match[0]);
      a.href = match[0];
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      p.append(a);
      last = match.index + match[0].length;
    }
    p.append(text.slice(last));
    return p;
  }

  function render(msg, prepend) {
    const id = Number(msg.id);
    if (!Number.isFinite(id) || seen.has(id)) return false;
    seen.add(id);
    if (lastId === null || id > lastId) lastId = id;

    const source = String(msg.source || "unknown");
    const sender = String(msg.sender || "anonymous");
    const date = new Date(msg.ts);
    const validDate = !Number.isNaN(date.getTime());
    if (validDate && !prepend) addDayDivider(date);

    const item = el("article", "message");
    item.dataset.id = String(id);
    item.dataset.source = source;

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
    item.append(meta, textWithLinks(msg.message == null ? "" : String(msg.message)));
    if (source === "mqtt") seeDevice(sender, msg.ts);
    if (msg.data && typeof msg.data === "object") plotReading(msg.data, date);

    // Structured device readings: compact "key: value" list under the text.
    if (msg.data && typeof msg.data === "object" && Object.keys(msg.data).length) {
      const dl = el("dl", "data");
      for (const [key, value] of Object.entries(msg.data)) {
        const row = el("div", "data-row");
        row.append(el("dt", "", key), el("dd", "", formatValue(value)));
        dl.append(row);
      }
      item.append(dl);
    }

    if (prepend) log.insertBefore(item, log.firstChild);
    else log.append(item);
    logEmpty.hidden = true;

    // Our own message came back: nothing left to restore on error.
    if (lastSent && source === "websocket" && sender === lastSent.sender && msg.message === lastSent.message) {
      lastSent = null;
    }
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

  // ---- who is here: browsers from presence events, devices from what they post ----
  const presenceList = document.getElementById("presence");
  let browsers = [];
  const devices = new Map(); // name -> last seen (Date)
  const DEVICE_RECENT_MS = 10 * 60 * 1000;

  function seeDevice(name, ts) {
    const when = new Date(ts);
    if (Number.isNaN(when.getTime()) || Date.now() - when > DEVICE_RECENT_MS) return;
    if (!devices.has(name) || devices.get(name) < when) devices.set(name, when);
    renderPresence();
  }

  function renderPresence() {
    presenceList.replaceChildren();
    for (const b of browsers) {
      const label = b.name + (b.count > 1 ? " ×" + b.count : "");
      const li = el("li", "presence-browser", label);
      li.title = "In a browser";
      presenceList.append(li);
    }
    for (const [name, when] of [...devices].sort()) {
      const li = el("li", "presence-device", name);
      li.title = "Device, last heard " + when.toLocaleTimeString();
      presenceList.append(li);
    }
    if (!presenceList.children.length) presenceList.append(el("li", "muted", "Nobody yet"));
  }

  // ---- device readings as live charts, one per numeric field ----
  const chartsPanel = document.getElementById("charts-panel");
  const chartsBox = document.getElementById("charts");
  const charts = new Map(); // field -> {chart, latest}
  const MAX_POINTS = 100;

  function plotReading(data, date) {
    if (typeof Chart === "undefined") return; // vendored script missing: show text only
    for (const [field, value] of Object.entries(data)) {
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      let entry = charts.get(field);
      if (!entry) entry = charts.set(field, makeChart(field)).get(field);
      const label = date.toLocaleTimeString();
      entry.chart.data.labels.push(label);
      entry.chart.data.datasets[0].data.push(value);
      if (entry.chart.data.labels.length > MAX_POINTS) {
        entry.chart.data.labels.shift();
        entry.chart.data.datasets[0].data.shift();
      }
      entry.chart.update("none");
      entry.latest.textContent = field + ": " + value + " at " + label;
    }
  }

  function makeChart(field) {
    chartsPanel.hidden = false;
    const box = el("figure", "chart-box");
    const latest = el("p", "chart-latest");
    latest.dataset.field = field;
    const holder = el("div", "chart");
    const canvas = document.createElement("canvas");
    canvas.dataset.field = field;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Chart of " + field);
    holder.append(canvas);
    box.append(latest, holder);
    chartsBox.append(box);
    const chart = new Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [{ label: field, data: [], borderColor: "#2563eb", tension: 0.2 }] },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { display: false } } },
    });
    return { chart, latest };
  }

  // ---- older messages on demand ----
  const loadEarlier = document.getElementById("load-earlier");
  let oldestId = null;
  loadEarlier.addEventListener("click", async () => {
    loadEarlier.disabled = true;
    try {
      const url = "/api/rooms/" + encodeURIComponent(room) + "/messages?limit=50&before=" + oldestId;
      const response = await fetch(url);
      if (!response.ok) throw new Error("HTTP " + response.status);
      const older = (await response.json()).messages;
      const height = log.scrollHeight;
      for (const msg of older.slice().reverse()) render(msg, true);
      log.scrollTop += log.scrollHeight - height; // keep the reader where they were
      if (older.length) oldestId = older[0].id;
      loadEarlier.hidden = older.length < 50;
    } catch (e) {
      showError("Could not load earlier messages: " + e.message);
    } finally {
      loadEarlier.disabled = false;
    }
  });

  // ---- copy buttons of the "post here from elsewhere" panel ----
  for (const button of document.querySelectorAll(".copy:not(.load-earlier)")) {
    button.addEventListener("click", async () => {
      const text = button.previousElementSibling.textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (e) {
        const area = el("textarea");
        area.value = text;
        document.body.append(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
  }

  // ---- connection ----
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
    setStatus("connecting", (everConnected ? "Reconnecting…" : "Connecting…") + pendingNote());

    const ws = new WebSocket(socketUrl());
    socket = ws;
    let firstHistory = true;

    ws.addEventListener("open", () => {
      delay = MIN_DELAY; // healthy again: next outage starts from 1s
      everConnected = true;
      setStatus("connected", "Connected");
    });

    ws.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return; // ignore anything that is not JSON
      }
      if (data.type === "history") {
        const batch = Array.isArray(data.messages) ? data.messages : [];
        if (oldestId === null && batch.length) {
          oldestId = batch[0].id;
          loadEarlier.hidden = batch.length < 50;
        }
        addMessages(batch, firstHistory);
        firstHistory = false;
        if (!seen.size) logEmpty.textContent = "No messages yet. Say hello!";
      } else if (data.type === "message") {
        addMessages([data], false);
      } else if (data.type === "presence") {
        browsers = Array.isArray(data.browsers) ? data.browsers : [];
        for (const d of data.devices || []) seeDevice(d.name, d.last_seen);
        renderPresence();
      } else if (data.type === "error") {
        showError(String(data.error || "Something went wrong."));
        // Give the user their text back if the server refused it.
        if (lastSent && !input.value && Date.now() - lastSent.at < 10000) {
          input.value = lastSent.message;
          autosize();
        }
        lastSent = null;
      }
    });

    ws.addEventListener("close", () => {
      if (socket !== ws) return;
      socket = null;
      scheduleReconnect();
    });
    // "error" is always followed by "close", which handles the retry.
  }

  function scheduleReconnect() {
    const wait = delay;
    delay = Math.min(delay * 2, MAX_DELAY); // exponential backoff: 1s, 2s, 4s, 8s, 10s…
    // Set once (no per-second countdown) so screen readers aren't flooded.
    setStatus("disconnected", "Disconnected, retrying in " + wait / 1000 + "s…" + pendingNote());
    retryTimer = setTimeout(connect, wait);
  }

  // Coming back online: don't wait out the backoff.
  window.addEventListener("online", () => {
    if (!socket) connect();
  });

  // ---- composer ----
  const pendingNote = () => (outbox.length ? " (" + outbox.length + " unsent)" : "");

  // Grow the textarea with its content (CSS caps it); the log shrinks, so
  // stay pinned to the bottom if the reader was there.
  function autosize() {
    const stick = isAtBottom();
    input.style.height = "auto";
    input.style.height = input.scrollHeight + 2 + "px";
    if (stick) log.scrollTop = log.scrollHeight;
  }
  input.addEventListener("input", autosize);

  // A message that could not be sent stays in the log, marked, until the user retries it.
  function showUnsent(payload) {
    const item = el("article", "message mine failed");
    const meta = el("header", "meta");
    const retry = el("button", "retry", "Retry");
    retry.type = "button";
    meta.append(el("span", "sender", payload.sender), " ", el("span", "failed-note", "Not sent"), retry);
    item.append(meta, textWithLinks(payload.message));
    outbox.push(payload);
    retry.addEventListener("click", () => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        showError("Still offline: the message will be sent when you retry after reconnecting.");
        return;
      }
      socket.send(JSON.stringify(payload));
      outbox = outbox.filter((p) => p !== payload);
      item.remove();
    });
    log.append(item);
    logEmpty.hidden = true;
  }

  function send() {
    const text = input.value;
    if (!text.trim()) return; // never send empty / whitespace-only messages
    const payload = { message: text, sender: currentSender() };
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(payload));
    } else {
      showUnsent(payload);
    }
    lastSent = { ...payload, at: Date.now() };
    errorBox.hidden = true;
    input.value = "";
    autosize();
    input.focus();
    // The echo of our own message should always be visible.
    scrollToBottom();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter inserts a newline; ignore Enter while an IME is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });

  connect();
})();

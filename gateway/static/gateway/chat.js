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
  let outbox = []; // messages typed while offline, flushed on (re)connect
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

  function render(msg) {
    const id = Number(msg.id);
    if (!Number.isFinite(id) || seen.has(id)) return false;
    seen.add(id);
    if (lastId === null || id > lastId) lastId = id;

    const source = String(msg.source || "unknown");
    const sender = String(msg.sender || "anonymous");
    const date = new Date(msg.ts);
    const validDate = !Number.isNaN(date.getTime());
    if (validDate) addDayDivider(date);

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
    item.append(meta, el("p", "text", msg.message == null ? "" : msg.message));

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

    log.append(item);
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

  // ---- connection ----
  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let url = scheme + location.host + "/ws/chat/" + encodeURIComponent(room) + "/";
    if (lastId !== null) url += "?after=" + encodeURIComponent(lastId);
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
      const pending = outbox;
      outbox = [];
      for (const payload of pending) ws.send(JSON.stringify(payload));
    });

    ws.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return; // ignore anything that is not JSON
      }
      if (data.type === "history") {
        addMessages(Array.isArray(data.messages) ? data.messages : [], firstHistory);
        firstHistory = false;
        if (!seen.size) logEmpty.textContent = "No messages yet. Say hello!";
      } else if (data.type === "message") {
        addMessages([data], false);
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

  function send() {
    const text = input.value;
    if (!text.trim()) return; // never send empty / whitespace-only messages
    const payload = { message: text, sender: currentSender() };
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(payload));
    } else {
      outbox.push(payload); // delivered as soon as we reconnect
      statusText.textContent = statusText.textContent.replace(/ \(\d+ unsent\)$/, "") + pendingNote();
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

// Index page: explain invalid room names in words, then go to /chat/<name>/.
"use strict";

(() => {
  const form = document.getElementById("room-form");
  const input = document.getElementById("room-input");
  const errorEl = document.getElementById("room-error");
  const RULE = "Room names can use letters, digits, - and _ only, at most 64 characters.";
  const MAX = 64;

  // Browsers compile `pattern` with the RegExp "v" flag, where a bare "-" at
  // the end of a character class is a syntax error and the whole pattern would
  // be silently ignored. Escape it so native validation keeps working.
  const rawPattern = input.getAttribute("pattern") || "[A-Za-z0-9_-]{1,64}";
  const safePattern = rawPattern.replace(/([^\\])-\]/g, "$1\\-]");
  if (safePattern !== rawPattern) input.setAttribute("pattern", safePattern);

  let valid;
  try {
    valid = new RegExp("^(?:" + safePattern + ")$", "u");
  } catch (e) {
    valid = /^[A-Za-z0-9_-]{1,64}$/u;
  }

  // Returns a human explanation of what is wrong, or "" when the name is fine.
  function problem(name) {
    if (!name) return "Please enter a room name.";
    if (valid.test(name)) return "";
    const length = [...name].length;
    if (length > MAX) return RULE + " This one has " + length + ".";
    const bad = [...new Set([...name].filter((ch) => !/[A-Za-z0-9_-]/.test(ch)))];
    if (bad.length) {
      const shown = bad.map((ch) => (ch === " " ? "spaces" : "“" + ch + "”")).join(", ");
      return RULE + " Not allowed: " + shown + ".";
    }
    return RULE;
  }

  function check(showEmpty) {
    const name = input.value.trim();
    const message = problem(name);
    // Don't nag about an empty box while the user is still typing.
    const visible = message && (name || showEmpty) ? message : "";
    input.setCustomValidity(message);
    input.setAttribute("aria-invalid", visible ? "true" : "false");
    errorEl.textContent = visible;
    errorEl.hidden = !visible;
    return !message;
  }

  // We show our own explanation instead of the browser's terse bubble.
  form.noValidate = true;
  input.addEventListener("input", () => check(false));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    input.value = input.value.trim();
    if (!check(true)) {
      input.focus();
      return;
    }
    location.href = "/chat/" + encodeURIComponent(input.value) + "/";
  });

  // "5 minutes ago" in the visitor's language, full date in their time zone.
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
  function relative(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    if (Math.abs(seconds) < 60) return "just now";
    const [unit, size] = UNITS.find(([, s]) => Math.abs(seconds) >= s);
    return rtf.format(Math.round(seconds / size), unit);
  }
  for (const time of document.querySelectorAll("time[datetime]")) {
    const date = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) continue;
    time.textContent = relative(date);
    time.title = date.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
  }
})();

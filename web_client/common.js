// Helpers shared by the candidate and observer pages: element lookup, the page's session id,
// the status pill and the error box. Loaded before each page's own script.
"use strict";

window.rtPage = (() => {
  const $ = (id) => document.getElementById(id);

  // The path segment after `name`: /candidate/{id} or /observe/{id} gives the session id.
  function pathSegmentAfter(name) {
    const parts = location.pathname.split("/").filter(Boolean);
    const i = parts.indexOf(name);
    return i >= 0 && i + 1 < parts.length ? decodeURIComponent(parts[i + 1]) : "";
  }

  function setStatus(text, tone) {
    const pill = $("status");
    pill.textContent = text;
    pill.className = "pill" + (tone ? " " + tone : "");
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  return { $, pathSegmentAfter, setStatus, showError };
})();

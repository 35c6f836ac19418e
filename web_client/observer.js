// Observer page: live per-second signals and the final report of one interview session.
// Served at /observe/{session_id}; the HR API key comes from the URL fragment (#token=...)
// or the form, and is kept in sessionStorage only. The signals WebSocket backfills on
// every (re)connect, so reconnecting loses nothing; rows are de-duplicated by `t`.
"use strict";

(() => {
  const { $, pathSegmentAfter, setStatus, showError } = window.rtPage;
  const KEY_STORAGE = "rtserver.observer.apiKey";
  const SPARK_SECONDS = 120; // how much history the sparkline shows
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  const sessionId = pathSegmentAfter("observe");
  const signals = new Map(); // t -> signal message, one per second
  let socket = null;
  let backoffMs = BACKOFF_MIN_MS;
  let retryTimer = null;
  let finished = false; // a final message arrived: the stream is complete

  // ---------------------------------------------------------------- API key

  // Reads #token=... once and removes it from the address bar, so the key does not stay in
  // history or screenshots.
  function takeKeyFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = params.get("token");
    if (key) {
      sessionStorage.setItem(KEY_STORAGE, key);
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  function askForKey(message) {
    $("login").hidden = false;
    $("key").focus();
    if (message) showError(message);
  }

  // ---------------------------------------------------------------- formatting

  function num(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  // Face and speech arrive as a 0–1 fraction of the second (or a boolean).
  function fraction(value) {
    if (typeof value === "boolean") return value ? 1 : 0;
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function pct(value) {
    const f = fraction(value);
    return f === null ? "–" : `${Math.round(f * 100)}`;
  }

  function tKey(t) {
    return typeof t === "number" ? t : Number(t);
  }

  function describe(value) {
    if (value === null || value === undefined) return "";
    if (typeof value !== "object") return String(value);
    const show = (v) =>
      typeof v !== "number" ? JSON.stringify(v) : Number.isInteger(v) ? String(v) : num(v, 2);
    return Object.entries(value)
      .map(([k, v]) => `${k} ${show(v)}`)
      .join(", ");
  }

  // ---------------------------------------------------------------- signals

  function makeRow(msg) {
    const video = msg.video || {};
    const audio = msg.audio || {};
    const tr = document.createElement("tr");
    tr.dataset.t = String(tKey(msg.t));
    const cells = [
      Number.isInteger(msg.t) ? String(msg.t) : num(msg.t, 1),
      num(video.fps, 1),
      pct(video.face),
      pct(audio.speech),
      num(audio.loudness_dbfs, 1),
      num(audio.pitch_hz, 0),
      num(msg.lag_ms, 0),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }

  // Newest first; a backfilled (older) second is slotted into its place.
  function insertRow(msg) {
    const body = $("rows");
    const t = tKey(msg.t);
    const row = makeRow(msg);
    for (const existing of body.children) {
      if (Number(existing.dataset.t) < t) {
        body.insertBefore(row, existing);
        return;
      }
    }
    body.append(row);
  }

  function onSignal(msg) {
    const t = tKey(msg.t);
    if (!Number.isFinite(t) || signals.has(t)) return; // replayed by a backfill
    signals.set(t, msg);
    insertRow(msg);
    $("empty").hidden = true;
    if (t === Math.max(...signals.keys())) {
      const parts = [];
      if (msg.emotion != null) parts.push(`emotion: ${describe(msg.emotion)}`);
      if (msg.fluency != null) parts.push(`fluency: ${describe(msg.fluency)}`);
      $("latest").textContent = parts.join(" · ");
    }
    drawSpark();
  }

  function drawSpark() {
    const canvas = $("spark");
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    const times = [...signals.keys()].sort((a, b) => a - b);
    if (times.length === 0) return;
    const last = times[times.length - 1];
    const first = Math.max(times[0], last - SPARK_SECONDS);
    const span = Math.max(last - first, 1);
    const styles = getComputedStyle(document.documentElement);
    const series = [
      { color: styles.getPropertyValue("--face").trim(), get: (m) => (m.video || {}).face },
      { color: styles.getPropertyValue("--speech").trim(), get: (m) => (m.audio || {}).speech },
    ];
    const pad = 4;
    for (const { color, get } of series) {
      ctx.strokeStyle = color || "#333";
      ctx.lineWidth = 2;
      ctx.beginPath();
      let drawing = false;
      for (const t of times) {
        if (t < first) continue;
        const f = fraction(get(signals.get(t)));
        if (f === null) {
          drawing = false; // leave a gap where the value is missing
          continue;
        }
        const x = pad + ((t - first) / span) * (width - 2 * pad);
        const y = height - pad - f * (height - 2 * pad);
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        drawing = true;
      }
      ctx.stroke();
    }
  }

  // ---------------------------------------------------------------- final report

  function evidenceCell(evidence) {
    const td = document.createElement("td");
    td.className = "evidence";
    if (Array.isArray(evidence)) {
      const ul = document.createElement("ul");
      for (const item of evidence) {
        const li = document.createElement("li");
        li.textContent = typeof item === "string" ? item : describe(item);
        ul.append(li);
      }
      td.append(ul);
    } else {
      td.textContent = typeof evidence === "string" ? evidence : describe(evidence);
    }
    return td;
  }

  function onFinal(msg) {
    finished = true;
    $("final").hidden = false;
    // Scores on a 0–1 scale get two decimals; on a 0–100 scale, none.
    const digits = typeof msg.score === "number" && Math.abs(msg.score) <= 1 ? 2 : 0;
    $("final-score").textContent = num(msg.score, digits);
    $("final-duration").textContent = Number.isFinite(msg.duration_s)
      ? `${Math.floor(msg.duration_s / 60)} min ${Math.round(msg.duration_s % 60)} s analysed`
      : "";
    const body = $("final-dimensions");
    body.replaceChildren();
    for (const [name, dim] of Object.entries(msg.dimensions || {})) {
      const tr = document.createElement("tr");
      for (const text of [name, num((dim || {}).score, 2), num((dim || {}).weight, 2)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      tr.append(evidenceCell((dim || {}).evidence));
      body.append(tr);
    }
    setStatus("Interview finished", "ok");
  }

  // ---------------------------------------------------------------- connection

  function signalsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = `/api/v1/sessions/${encodeURIComponent(sessionId)}/signals`;
    return `${scheme}//${location.host}${path}?token=${encodeURIComponent(apiKey())}`;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (finished || !apiKey()) return;
    setStatus(backoffMs > BACKOFF_MIN_MS ? "Reconnecting…" : "Connecting…", "warn");
    const ws = new WebSocket(signalsUrl());
    socket = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      backoffMs = BACKOFF_MIN_MS;
      showError("");
      setStatus("Live", "ok");
    });
    ws.addEventListener("message", (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return; // not for us
      }
      if (msg && msg.type === "signal") onSignal(msg);
      else if (msg && msg.type === "final") onFinal(msg);
    });
    ws.addEventListener("close", (event) => {
      if (socket === ws) socket = null;
      if (finished) return;
      // 1008 (policy) and 4401/4403: the server refused the key, so retrying cannot help.
      if (event.code === 1008 || event.code === 4401 || event.code === 4403) {
        sessionStorage.removeItem(KEY_STORAGE);
        setStatus("Not authorised", "bad");
        askForKey(event.reason || "The API key was not accepted.");
        return;
      }
      if (event.code === 4404) {
        setStatus("Unknown session", "bad");
        showError(event.reason || "There is no session with this id.");
        return;
      }
      if (!opened) {
        // The server refuses a bad key or an unknown session with an HTTP status before the
        // upgrade, which a browser only reports as 1006; ask the REST API which it was.
        explainRefusal();
        return;
      }
      scheduleReconnect(opened);
    });
  }

  async function explainRefusal() {
    let status = 0;
    try {
      const url = `/api/v1/sessions/${encodeURIComponent(sessionId)}`;
      const response = await fetch(url, { headers: { Authorization: `Bearer ${apiKey()}` } });
      status = response.status;
    } catch (_) {
      status = 0; // the server is unreachable: retry
    }
    if (status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      setStatus("Not authorised", "bad");
      askForKey("The API key was not accepted.");
    } else if (status === 404) {
      setStatus("Unknown session", "bad");
      showError("There is no session with this id.");
    } else {
      scheduleReconnect(false);
    }
  }

  // Exponential backoff with jitter, so many observers do not reconnect in lockstep.
  function scheduleReconnect(wasOpen) {
    const delay = wasOpen ? BACKOFF_MIN_MS : backoffMs;
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
    const jittered = delay * (0.75 + Math.random() * 0.5);
    setStatus(`Disconnected, retrying in ${Math.ceil(jittered / 1000)} s`, "bad");
    retryTimer = setTimeout(connect, jittered);
  }

  // Reconnect at once when the tab comes back online rather than waiting out the backoff.
  window.addEventListener("online", () => {
    if (!socket && !finished && retryTimer !== null) connect();
  });

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key").value = "";
    $("login").hidden = true;
    showError("");
    backoffMs = BACKOFF_MIN_MS;
    connect();
  });

  $("session").textContent = sessionId ? `· ${sessionId}` : "";
  takeKeyFromFragment();
  if (!sessionId) {
    showError("No session id in the address.");
  } else if (apiKey()) {
    connect();
  } else {
    askForKey("");
  }
})();

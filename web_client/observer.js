// HR observer page: the list of interviews (/observe) and one interview (/observe/{id}): the
// candidate's relayed video, live charts, the current question, and the report once it ends.
//
// The HR API key comes from the URL fragment (#token=...) or the key form and is kept in
// sessionStorage only (this tab). REST calls send it as `Authorization: Bearer`; the signals
// websocket takes it as ?token= because browsers cannot set headers there. The websocket
// backfills every second so far on each (re)connect, so a late observer sees the whole
// timeline; seconds are de-duplicated by `t`.
"use strict";

(() => {
  const { $, pathSegmentAfter, setStatus, showError } = window.rtPage;
  const KEY_STORAGE = "rtserver.observer.apiKey";
  const LIST_REFRESH_MS = 4000;
  const WATCH_RETRY_MS = 2000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const ICE_GATHER_TIMEOUT_MS = 5000;

  // Stacking order of the expression chart, bottom to top (labels of the emotion model).
  const EMOTIONS = ["neutral", "happy", "surprise", "sad", "fear", "angry", "disgust"];
  const EMOTION_COLORS = {
    neutral: "#c9d0db",
    happy: "#f5c451",
    surprise: "#f29a55",
    sad: "#6e9fd9",
    fear: "#a68ad6",
    angry: "#de6356",
    disgust: "#7db56a",
  };
  const COLORS = {
    accent: "#2457c5",
    accentSoft: "rgba(36, 87, 197, 0.18)",
    articulation: "#7f9bd6",
    pause: "rgba(93, 102, 120, 0.35)",
    loudness: "#c05a1f",
    face: "#1f8a4c",
    faceSoft: "rgba(31, 138, 76, 0.18)",
    band: "rgba(31, 138, 76, 0.08)",
    marker: "rgba(29, 35, 48, 0.45)",
    grid: "#eceef2",
    axis: "#5d6678",
  };
  const RATE_BAND_SPS = [3.0, 5.5]; // the fluency score's best speech-rate band
  const END_REASONS = {
    ended_by_candidate: "Candidate finished",
    ended_by_hr: "Ended by HR",
    hangup: "Candidate hung up",
    media_timeout: "No media for too long",
    connection_lost: "Connection lost",
    server_restart: "Server restarted",
    server_shutdown: "Server shut down",
    erased: "Erased",
  };

  const sessionId = pathSegmentAfter("observe");

  // ================================================================ small helpers

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const num = (v, digits) => (isNum(v) ? v.toFixed(digits) : "–");
  const pct = (v) => (isNum(v) ? `${Math.round(v * 100)}\u00a0%` : "–");
  const cap = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : "");

  function clock(seconds) {
    if (!isNum(seconds) || seconds < 0) return "–";
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  function dateTime(epochS) {
    if (!isNum(epochS)) return "–";
    return new Date(epochS * 1000).toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // ================================================================ API key

  // Reads #token=... once and removes it from the address bar (history, screenshots).
  function takeKeyFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = params.get("token");
    if (key) {
      sessionStorage.setItem(KEY_STORAGE, key);
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORAGE) || "";

  function askForKey(message) {
    stopEverything();
    sessionStorage.removeItem(KEY_STORAGE);
    $("list-view").hidden = true;
    $("session-view").hidden = true;
    $("forget-key").hidden = true;
    $("login").hidden = false;
    document.body.dataset.view = "login";
    setStatus("Signed out", "bad");
    showError(message || "");
    $("key").focus();
  }

  class AuthError extends Error {}

  // A REST call with the key; returns {status, ok, body}; throws AuthError on 401.
  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${apiKey()}`, ...(options.headers || {}) };
    const response = await fetch(path, { cache: "no-store", ...options, headers });
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
    }
    if (response.status === 401) throw new AuthError("The API key was not accepted.");
    return { status: response.status, ok: response.ok, body, headers: response.headers };
  }

  const sessionPath = (id, rest = "") => `/api/v1/sessions/${encodeURIComponent(id)}${rest}`;
  const observeLink = (id) =>
    `/observe/${encodeURIComponent(id)}#token=${encodeURIComponent(apiKey())}`;

  // ================================================================ list view

  const list = { timer: null, tick: null, sessions: [], signature: "", filter: "all", query: "" };

  const STATUS_LABEL = { live: "Live", created: "Waiting", ended: "Ended", erased: "Erased" };
  const STATUS_RANK = { live: 0, created: 1, ended: 2, erased: 3 };

  function sessionDuration(s, nowS) {
    if (!isNum(s.started_at)) return null;
    const end = isNum(s.ended_at) ? s.ended_at : s.status === "live" ? nowS : null;
    return end === null ? null : Math.max(0, end - s.started_at);
  }

  function statusBadge(status) {
    return el("span", {
      class: "state-badge",
      "data-state": status,
      text: STATUS_LABEL[status] || cap(status),
    });
  }

  function renderList() {
    const body = $("sessions-body");
    const q = list.query.trim().toLowerCase();
    const shown = list.sessions
      .filter((s) => list.filter === "all" || s.status === list.filter)
      .filter((s) => !q || `${s.candidate || ""} ${s.job || ""} ${s.id}`.toLowerCase().includes(q))
      .sort(
        (a, b) =>
          (STATUS_RANK[a.status] ?? 9) - (STATUS_RANK[b.status] ?? 9) ||
          (b.started_at || b.created_at || 0) - (a.started_at || a.created_at || 0),
      );
    const nowS = Date.now() / 1000;
    const rows = shown.map((s) => {
      const openable = s.status !== "erased";
      const name = s.candidate || "Unnamed candidate";
      const nameCell = openable
        ? el("a", { href: observeLink(s.id), text: name })
        : el("span", { text: name });
      const started = isNum(s.started_at)
        ? el("time", {
            datetime: new Date(s.started_at * 1000).toISOString(),
            text: dateTime(s.started_at),
          })
        : el("span", {
            class: "muted",
            text: `Not joined · created ${dateTime(s.created_at)}`,
          });
      const duration = sessionDuration(s, nowS);
      const tr = el(
        "tr",
        { "data-id": s.id, "data-status": s.status, class: openable ? "clickable" : null },
        el("td", { class: "cell-name" }, nameCell, el("div", { class: "muted tiny", text: s.id })),
        el("td", { text: s.job || "–" }),
        el("td", {}, started),
        el("td", { class: "num duration", text: duration === null ? "–" : clock(duration) }),
        el("td", {}, statusBadge(s.status)),
      );
      if (openable) {
        tr.addEventListener("click", (event) => {
          if (event.target.closest("a")) return; // the link navigates by itself
          location.href = observeLink(s.id);
        });
      }
      return tr;
    });
    body.replaceChildren(...rows);
    $("sessions-empty").hidden = rows.length > 0;
    $("sessions-empty").textContent = list.sessions.length
      ? "No interviews match."
      : "No interviews yet. Create one with POST /api/v1/sessions.";
    const live = list.sessions.filter((s) => s.status === "live").length;
    $("list-count").textContent =
      `${list.sessions.length} interview${list.sessions.length === 1 ? "" : "s"}` +
      (live ? `, ${live} live` : "");
  }

  // Live durations tick every second without rebuilding the rows (keeps focus and hover).
  function tickDurations() {
    const nowS = Date.now() / 1000;
    for (const tr of $("sessions-body").children) {
      if (tr.dataset.status !== "live") continue;
      const s = list.sessions.find((x) => x.id === tr.dataset.id);
      const d = s ? sessionDuration(s, nowS) : null;
      tr.querySelector(".duration").textContent = d === null ? "–" : clock(d);
    }
  }

  async function loadList() {
    clearTimeout(list.timer);
    try {
      const { ok, status, body } = await api("/api/v1/sessions");
      if (!ok) throw new Error(`HTTP ${status}`);
      list.sessions = Array.isArray(body && body.sessions) ? body.sessions : [];
      const signature = JSON.stringify(list.sessions);
      if (signature !== list.signature) {
        list.signature = signature;
        renderList();
      }
      showError("");
      setStatus("Up to date", "ok");
      $("list-updated").textContent = `· updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (error instanceof AuthError) return askForKey(error.message);
      setStatus("Offline, retrying", "bad");
    }
    list.timer = setTimeout(loadList, LIST_REFRESH_MS);
  }

  function startList() {
    document.body.dataset.view = "list";
    document.title = "Interviews · rtserver";
    $("list-view").hidden = false;
    for (const button of document.querySelectorAll("[data-filter]")) {
      button.addEventListener("click", () => {
        list.filter = button.dataset.filter;
        for (const b of document.querySelectorAll("[data-filter]")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        renderList();
      });
    }
    $("list-search").addEventListener("input", (event) => {
      list.query = event.target.value;
      renderList();
    });
    list.tick = setInterval(tickDurations, 1000);
    loadList();
  }

  // ================================================================ session state

  const state = {
    session: null, // GET /api/v1/sessions/{id}
    signals: new Map(), // t -> signal message
    final: null,
    finished: false,
    refreshed: false, // the record was fetched again once the candidate joined
    emotionOff: false,
    chartSeconds: 0, // seconds the charts have taken (body.dataset.chartUpdates)
    renderTimer: null,
    range: 0, // 0: the whole interview; else the last N seconds
    zoom: null, // [min, max] chosen by dragging across a chart
  };

  function sortedSignals() {
    return [...state.signals.keys()].sort((a, b) => a - b).map((t) => state.signals.get(t));
  }

  function sessionQuestions() {
    const qs = state.session && Array.isArray(state.session.questions) ? state.session.questions : [];
    return qs;
  }

  // Where each question began (first second whose `question` is its index), from the signals;
  // the final's per-question start_s where the signals do not say.
  function questionStarts(rows) {
    const starts = new Map();
    for (const s of rows) {
      if (Number.isInteger(s.question) && !starts.has(s.question)) starts.set(s.question, s.t);
    }
    if (starts.size === 0 && state.final && Array.isArray(state.final.questions)) {
      for (const q of state.final.questions) {
        if (Number.isInteger(q.index) && isNum(q.start_s)) starts.set(q.index, q.start_s);
      }
    }
    return starts;
  }

  // ================================================================ charts

  const charts = {}; // name -> uPlot
  let markers = []; // [{t, label}] question starts, drawn on every chart
  let chartRows = [];

  function axisTime() {
    return {
      stroke: COLORS.axis,
      grid: { stroke: COLORS.grid, width: 1 },
      ticks: { stroke: COLORS.grid, width: 1 },
      incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600],
      space: 56,
      values: (u, splits) => splits.map((v) => clock(v)),
    };
  }

  function axisY(opts) {
    return {
      stroke: COLORS.axis,
      grid: { stroke: COLORS.grid, width: 1 },
      ticks: { show: false },
      size: 52,
      ...opts,
    };
  }

  const pctAxis = (u, splits) => splits.map((v) => `${Math.round(v * 100)}%`);

  // Dashed vertical lines where each question began, labelled Q1, Q2…
  function markerPlugin() {
    return {
      hooks: {
        draw: [
          (u) => {
            if (!markers.length) return;
            const { ctx } = u;
            const { top, height, left, width } = u.bbox;
            const dpr = window.devicePixelRatio || 1;
            ctx.save();
            ctx.strokeStyle = COLORS.marker;
            ctx.fillStyle = COLORS.marker;
            ctx.lineWidth = dpr;
            ctx.setLineDash([4 * dpr, 3 * dpr]);
            ctx.font = `${11 * dpr}px system-ui, sans-serif`;
            ctx.textBaseline = "top";
            for (const m of markers) {
              const x = Math.round(u.valToPos(m.t, "x", true));
              if (x < left || x > left + width) continue;
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              ctx.fillText(m.label, x + 3 * dpr, top + 2 * dpr);
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  // Zoom: dragging across any chart zooms every chart to that span.
  function zoomPlugin() {
    return {
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 4) return;
            const min = u.posToVal(u.select.left, "x");
            const max = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            if (max - min < 2) return;
            state.zoom = [min, max];
            $("reset-zoom").hidden = false;
            applyRange();
          },
        ],
      },
    };
  }

  // The legend shows the latest second while the pointer is not over a chart.
  function showLatest(u) {
    const n = u.data[0].length;
    if (n && (u.cursor.idx === null || u.cursor.idx === undefined)) u.setLegend({ idx: n - 1 }, false);
  }

  function legendPlugin() {
    return { hooks: { setCursor: [showLatest], setData: [showLatest] } };
  }

  function baseOptions(el, height, series, axes, scales, extra = {}) {
    return {
      width: Math.max(280, el.clientWidth || 600),
      height,
      series: [{ label: "Time", value: (u, v) => (v === null ? "–" : clock(v)) }, ...series],
      axes: [axisTime(), ...axes],
      scales: { x: { time: false }, ...scales },
      cursor: { sync: { key: "rt-observer" }, drag: { x: true, y: false, setScale: false } },
      legend: { live: true },
      plugins: [markerPlugin(), zoomPlugin(), legendPlugin()],
      ...extra,
    };
  }

  function createCharts() {
    if (typeof window.uPlot !== "function") {
      $("charts-empty").textContent = "The chart library did not load.";
      return;
    }
    const uPlot = window.uPlot;
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 12] }) : null;

    // Expression: cumulative probabilities drawn top series first, each filled to zero with an
    // opaque colour, so each visible band is one label; the legend shows the label's own value.
    const emotionEl = $("chart-emotion");
    const emotionSeries = [...EMOTIONS].reverse().map((label) => ({
      label: cap(label),
      stroke: EMOTION_COLORS[label],
      fill: EMOTION_COLORS[label],
      width: 1,
      points: { show: false },
      value: (u, v, si, idx) => {
        if (idx === null || idx === undefined) return "–";
        const s = chartRows[idx];
        const p = s && s.emotion && s.emotion.probs ? s.emotion.probs[label] : null;
        return isNum(p) ? `${Math.round(p * 100)}%` : "–";
      },
    }));
    charts.emotion = new uPlot(
      baseOptions(
        emotionEl,
        220,
        emotionSeries,
        [axisY({ values: pctAxis, splits: () => [0, 0.25, 0.5, 0.75, 1] })],
        { y: { range: [0, 1] } },
      ),
      [[], ...emotionSeries.map(() => [])],
      emotionEl,
    );

    const fluencyEl = $("chart-fluency");
    charts.fluency = new uPlot(
      baseOptions(
        fluencyEl,
        200,
        [
          {
            label: "Speech rate",
            points: { show: false },
            stroke: COLORS.accent,
            width: 2,
            scale: "sps",
            value: (u, v) => (isNum(v) ? `${v.toFixed(1)} syll/s` : "–"),
          },
          {
            label: "Articulation",
            points: { show: false },
            stroke: COLORS.articulation,
            width: 1.5,
            dash: [5, 4],
            scale: "sps",
            value: (u, v) => (isNum(v) ? `${v.toFixed(1)} syll/s` : "–"),
          },
          {
            label: "Pause time",
            stroke: COLORS.pause,
            fill: COLORS.pause,
            width: 0,
            scale: "pause",
            paths: bars || undefined,
            points: { show: false },
            value: (u, v) => (isNum(v) ? `${v.toFixed(2)} s` : "–"),
          },
        ],
        [
          axisY({ scale: "sps" }),
          axisY({ scale: "pause", side: 1, grid: { show: false }, values: (u, s) => s.map((v) => `${v}s`) }),
        ],
        {
          sps: { range: (u, min, max) => [0, Math.max(7, Math.ceil(isNum(max) ? max : 0))] },
          pause: { range: [0, 2] },
        },
        {
          hooks: {
            drawAxes: [
              (u) => {
                // The rate band the fluency score treats as best.
                const { ctx } = u;
                const { left, width } = u.bbox;
                const y1 = u.valToPos(RATE_BAND_SPS[1], "sps", true);
                const y0 = u.valToPos(RATE_BAND_SPS[0], "sps", true);
                ctx.save();
                ctx.fillStyle = COLORS.band;
                ctx.fillRect(left, y1, width, y0 - y1);
                ctx.restore();
              },
            ],
          },
        },
      ),
      [[], [], [], []],
      fluencyEl,
    );

    const speechEl = $("chart-speech");
    charts.speech = new uPlot(
      baseOptions(
        speechEl,
        200,
        [
          {
            label: "Speaking",
            points: { show: false },
            stroke: COLORS.accent,
            fill: COLORS.accentSoft,
            width: 1.5,
            scale: "frac",
            value: (u, v) => (isNum(v) ? `${Math.round(v * 100)}%` : "–"),
          },
          {
            label: "Loudness",
            points: { show: false },
            stroke: COLORS.loudness,
            width: 1.5,
            scale: "db",
            value: (u, v) => (isNum(v) ? `${v.toFixed(1)} dBFS` : "–"),
          },
        ],
        [
          axisY({ scale: "frac", values: pctAxis, splits: () => [0, 0.25, 0.5, 0.75, 1] }),
          axisY({
            scale: "db",
            side: 1,
            grid: { show: false },
            values: (u, s) => s.map((v) => `${v} dB`),
          }),
        ],
        {
          frac: { range: [0, 1] },
          db: { range: [-80, 0] }, // quieter seconds (silence) sit on the floor
        },
      ),
      [[], [], []],
      speechEl,
    );

    const faceEl = $("chart-face");
    charts.face = new uPlot(
      baseOptions(
        faceEl,
        160,
        [
          {
            label: "Face visible",
            points: { show: false },
            stroke: COLORS.face,
            fill: COLORS.faceSoft,
            width: 1.5,
            value: (u, v) => (isNum(v) ? `${Math.round(v * 100)}%` : "–"),
          },
        ],
        [axisY({ values: pctAxis, splits: () => [0, 0.5, 1] })],
        { y: { range: [0, 1] } },
      ),
      [[], []],
      faceEl,
    );

    const observer = new ResizeObserver(() => resizeCharts());
    for (const id of ["chart-emotion", "chart-fluency", "chart-speech", "chart-face"]) {
      observer.observe($(id));
    }
  }

  function resizeCharts(widthOverride) {
    for (const [name, u] of Object.entries(charts)) {
      const box = $(`chart-${name}`);
      const width = Math.max(280, Math.floor(widthOverride || box.clientWidth || 600));
      if (Math.abs(u.width - width) > 1) u.setSize({ width, height: u.height });
    }
  }

  // The charts' series, one value per second; null where a second was not measured.
  function chartData(rows) {
    const xs = rows.map((s) => s.t);
    const emo = (s) => (s.emotion && s.emotion.probs ? s.emotion.probs : null);
    const flu = (s, key) => (s.fluency && isNum(s.fluency[key]) ? s.fluency[key] : null);
    const cumulative = EMOTIONS.map((_, k) =>
      rows.map((s) => {
        const probs = emo(s);
        if (!probs) return null;
        let sum = 0;
        for (let j = 0; j <= k; j++) sum += isNum(probs[EMOTIONS[j]]) ? probs[EMOTIONS[j]] : 0;
        return Math.min(1, sum);
      }),
    );
    return {
      emotion: [xs, ...cumulative.reverse()],
      fluency: [
        xs,
        rows.map((s) => flu(s, "rate_sps")),
        rows.map((s) => flu(s, "articulation_sps")),
        rows.map((s) => flu(s, "pause_s")),
      ],
      speech: [
        xs,
        rows.map((s) => (s.audio && isNum(s.audio.speech) ? s.audio.speech : null)),
        rows.map((s) => (s.audio && isNum(s.audio.loudness_dbfs) ? s.audio.loudness_dbfs : null)),
      ],
      face: [
        xs,
        // A second with no analysed frame says nothing about the face: a gap, not a zero.
        rows.map((s) =>
          s.video && isNum(s.video.face) && !(s.video.fps === 0 && s.video.face === 0)
            ? s.video.face
            : null,
        ),
      ],
    };
  }

  function applyRange() {
    const xs = chartRows.map((s) => s.t);
    if (!xs.length) return;
    const first = xs[0];
    const last = xs[xs.length - 1];
    let span = null;
    if (state.zoom) span = state.zoom;
    else if (state.range) span = [Math.max(first, last - state.range), Math.max(last, first + 1)];
    for (const u of Object.values(charts)) {
      if (span) u.setScale("x", { min: span[0], max: span[1] });
      else u.setScale("x", { min: first, max: Math.max(last, first + 1) });
    }
  }

  function renderCharts() {
    const rows = sortedSignals();
    const fresh = rows.length - state.chartSeconds;
    chartRows = rows;
    const starts = questionStarts(rows);
    markers = [...starts.entries()]
      .sort((a, b) => a[1] - b[1])
      .map(([index, t]) => ({ t, label: `Q${index + 1}` }));
    $("charts-empty").hidden = rows.length > 0;
    if (Object.keys(charts).length) {
      const data = chartData(rows);
      for (const [name, u] of Object.entries(charts)) u.setData(data[name], false);
      applyRange();
    }
    if (fresh > 0) {
      state.chartSeconds = rows.length;
      const count = Number(document.body.dataset.chartUpdates || 0) + fresh;
      document.body.dataset.chartUpdates = String(count);
    }
  }

  function setRange(seconds) {
    state.range = seconds;
    state.zoom = null;
    $("reset-zoom").hidden = true;
    for (const b of document.querySelectorAll("[data-range]")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.range) === seconds));
    }
    applyRange();
  }

  // ================================================================ live panel

  function renderNow(rows) {
    const last = rows[rows.length - 1];
    if (!last) return;
    $("now-t").textContent = `at ${clock(last.t + 1)}`;
    const video = last.video || {};
    const audio = last.audio || {};
    $("now-face").textContent = video.fps === 0 && video.face === 0 ? "no video" : pct(video.face);
    $("now-speech").textContent = pct(audio.speech);
    $("now-rate").textContent = last.fluency ? `${num(last.fluency.rate_sps, 1)} syll/s` : "–";
    $("now-loudness").textContent = isNum(audio.loudness_dbfs)
      ? `${audio.loudness_dbfs.toFixed(0)} dBFS`
      : "–";
    let pauses = 0;
    for (const s of rows) {
      if (s.t > last.t - 60 && s.fluency && isNum(s.fluency.pause_count)) {
        pauses += s.fluency.pause_count;
      }
    }
    $("now-pauses").textContent = String(pauses);
    if (state.emotionOff) $("now-emotion").textContent = "Not measured";
    else if (last.emotion && last.emotion.dominant) {
      const c = last.emotion.confidence;
      $("now-emotion").textContent =
        cap(last.emotion.dominant) + (isNum(c) ? ` (${Math.round(c * 100)}% sure)` : "");
    } else $("now-emotion").textContent = "no face";
  }

  function renderQuestion(rows) {
    const questions = sessionQuestions();
    const last = rows[rows.length - 1];
    const current = last && Number.isInteger(last.question) ? last.question : null;
    const starts = questionStarts(rows);
    const list = $("question-list");
    list.replaceChildren(
      ...questions.map((q, i) => {
        const li = el(
          "li",
          { class: i === current ? "current" : starts.has(i) ? "done" : null },
          el("span", { class: "q-text", text: q.text }),
          el("span", { class: "muted small q-secs", text: clock(q.seconds) }),
        );
        if (i === current) li.setAttribute("aria-current", "step");
        return li;
      }),
    );
    list.hidden = questions.length === 0;
    const bar = $("question-progress");
    if (current === null) {
      $("question-number").textContent = questions.length ? `· ${questions.length} planned` : "";
      $("question-current").textContent = questions.length
        ? "Waiting for the first question"
        : "This interview has no scripted questions";
      $("question-elapsed").textContent = "–";
      $("question-allotted").textContent = "";
      bar.style.width = "0";
      bar.className = "";
      return;
    }
    const q = questions[current];
    $("question-number").textContent = questions.length
      ? `· ${current + 1} of ${questions.length}`
      : `· ${current + 1}`;
    $("question-current").textContent = q ? q.text : `Question ${current + 1}`;
    const elapsed = last.t + 1 - (starts.has(current) ? starts.get(current) : last.t);
    $("question-elapsed").textContent = clock(elapsed);
    const allotted = q && isNum(q.seconds) ? q.seconds : null;
    $("question-allotted").textContent = allotted ? `of ${clock(allotted)}` : "";
    const share = allotted ? elapsed / allotted : 0;
    bar.style.width = `${Math.min(100, share * 100)}%`;
    bar.className = share >= 1 ? "over" : share >= 0.8 ? "late" : "";
  }

  function scheduleRender() {
    if (state.renderTimer !== null) return;
    // Coalesces a backfill burst into one redraw; timers still run in background tabs.
    state.renderTimer = setTimeout(() => {
      state.renderTimer = null;
      const rows = sortedSignals();
      renderCharts();
      if (!state.finished) {
        renderNow(rows);
        renderQuestion(rows);
      }
      renderHeader();
    }, 30);
  }

  // ================================================================ header

  function renderHeader() {
    const s = state.session || {};
    const name = s.candidate || "Unnamed candidate";
    $("candidate-name").textContent = name;
    $("nav-current").textContent = name;
    $("nav-current").hidden = false;
    document.title = `${name} · Interview`;
    const rows = sortedSignals();
    const parts = [];
    if (s.job) parts.push(s.job);
    if (isNum(s.started_at)) parts.push(`Started ${dateTime(s.started_at)}`);
    else if (isNum(s.created_at)) parts.push(`Created ${dateTime(s.created_at)}`);
    const duration = state.final && isNum(state.final.duration_s)
      ? state.final.duration_s
      : rows.length
        ? rows[rows.length - 1].t + 1
        : null;
    if (duration !== null) parts.push(`${clock(duration)} analysed`);
    parts.push(`Session ${sessionId}`);
    $("session-meta").textContent = parts.join(" · ");
    const status = state.finished ? "ended" : rows.length ? "live" : s.status || "";
    const badge = $("session-state");
    badge.dataset.state = status;
    badge.textContent = STATUS_LABEL[status] || cap(status);
  }

  // ================================================================ report

  function scoreTone(score) {
    return score >= 70 ? "good" : score >= 40 ? "fair" : "poor";
  }

  function renderReport(final) {
    document.body.dataset.view = "report";
    $("report").hidden = false;
    $("live-view").hidden = true;
    const score = isNum(final.score) ? Math.round(final.score) : null;
    $("report-score").textContent = score === null ? "–" : String(score);
    $("report-score").dataset.tone = score === null ? "" : scoreTone(score);

    const s = state.session || {};
    const facts = [
      ["Candidate", s.candidate || "–"],
      ["Job", s.job || "–"],
      ["Date", dateTime(s.started_at || s.created_at)],
      ["Length", clock(final.duration_s)],
      ["Ended", END_REASONS[final.end_reason] || final.end_reason || "–"],
      ["Expression analysis", final.emotion_analysis === "off" ? "Off" : "On"],
    ];
    $("report-facts").replaceChildren(
      ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))),
    );

    const notes = Array.isArray(final.notes) ? final.notes : [];
    $("report-notes").replaceChildren(...notes.map((n) => el("li", { text: String(n) })));
    $("report-notes").hidden = notes.length === 0;

    const dims = Object.entries(final.dimensions || {}).sort(
      (a, b) => ((b[1] || {}).weight || 0) - ((a[1] || {}).weight || 0),
    );
    $("dimensions").replaceChildren(
      ...dims.map(([name, dim]) => {
        const value = dim && isNum(dim.score) ? dim.score : null;
        const rounded = value === null ? null : Math.round(value);
        const weight = dim && isNum(dim.weight) ? `weight ${Math.round(dim.weight * 100)}%` : "";
        return el(
          "div",
          { class: "dimension", "data-dimension": name },
          el(
            "div",
            { class: "dim-head" },
            el("span", { class: "dim-name", text: cap(name) }),
            el("span", { class: "dim-weight muted small", text: weight }),
            el("span", { class: "dim-score", text: rounded === null ? "–" : String(rounded) }),
          ),
          el(
            "div",
            {
              class: "dim-bar",
              role: "meter",
              "aria-label": `${cap(name)} score`,
              "aria-valuemin": 0,
              "aria-valuemax": 100,
              "aria-valuenow": rounded === null ? 0 : rounded,
            },
            el("span", {
              class: rounded === null ? "" : scoreTone(rounded),
              style: `width: ${rounded === null ? 0 : Math.max(1, Math.min(100, value))}%`,
            }),
          ),
          el("p", { class: "evidence", text: dim && dim.evidence ? String(dim.evidence) : "" }),
        );
      }),
    );

    const questions = sessionQuestions();
    const breakdown = Array.isArray(final.questions) ? final.questions : [];
    const emotionCol = final.emotion_analysis !== "off" && breakdown.some((q) => q.dominant_emotion);
    $("questions-breakdown").classList.toggle("no-emotion", !emotionCol);
    $("questions-breakdown").querySelector("tbody").replaceChildren(
      ...breakdown.map((q, i) => {
        const index = Number.isInteger(q.index) ? q.index : i;
        const text = q.text || (questions[index] && questions[index].text) || "–";
        const length =
          isNum(q.start_s) && isNum(q.end_s) ? q.end_s - q.start_s : isNum(q.seconds) ? q.seconds : null;
        const span = isNum(q.start_s) ? `${clock(q.start_s)}–${clock(q.end_s)}` : "";
        return el(
          "tr",
          {},
          el("td", { class: "num", text: String(index + 1) }),
          el("td", { class: "q-cell", text }),
          el(
            "td",
            { class: "num" },
            el("span", { text: clock(length) }),
            span ? el("div", { class: "muted tiny", text: span }) : null,
          ),
          el("td", { class: "num", text: pct(q.speech_ratio) }),
          el("td", { class: "num", text: num(q.rate_sps, 1) }),
          el("td", { class: "num", text: isNum(q.pause_count) ? String(q.pause_count) : "–" }),
          el("td", { class: "num", text: pct(q.face) }),
          el("td", { class: "col-emotion", text: q.dominant_emotion ? cap(q.dominant_emotion) : "–" }),
        );
      }),
    );
    $("questions-breakdown").hidden = breakdown.length === 0;
    $("questions-empty").hidden = breakdown.length > 0;

    if (final.emotion_analysis === "off") setEmotionOff(true);
  }

  function setEmotionOff(off) {
    state.emotionOff = off;
    $("emotion-off").hidden = !off;
    $("charts").classList.toggle("no-emotion", off);
  }

  function downloadCsv() {
    const head = [
      "t_s", "question", "fps", "face", "speech", "loudness_dbfs", "pitch_hz",
      "rate_sps", "articulation_sps", "pause_count", "pause_s", "speech_ratio", "pitch_var_st",
      "fluency_score", "dominant_emotion", "valence", "arousal", "emotion_confidence",
      ...EMOTIONS.map((e) => `p_${e}`),
    ]; // prettier-ignore
    const v = (x) => (x === null || x === undefined ? "" : String(x));
    const lines = [head.join(",")];
    for (const s of sortedSignals()) {
      const f = s.fluency || {};
      const e = s.emotion || {};
      const probs = e.probs || {};
      lines.push(
        [
          s.t, Number.isInteger(s.question) ? s.question + 1 : "", (s.video || {}).fps,
          (s.video || {}).face, (s.audio || {}).speech, (s.audio || {}).loudness_dbfs,
          (s.audio || {}).pitch_hz, f.rate_sps, f.articulation_sps, f.pause_count, f.pause_s,
          f.speech_ratio, f.pitch_var_st, f.score, e.dominant, e.valence, e.arousal,
          e.confidence, ...EMOTIONS.map((k) => probs[k]),
        ].map(v).join(","), // prettier-ignore
      );
    }
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    const a = el("a", {
      href: URL.createObjectURL(blob),
      download: `interview-${sessionId}.csv`,
    });
    document.body.append(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  }

  // ================================================================ relayed video

  const watch = { pc: null, timer: null, disconnectTimer: null, notice: null };

  function videoState(text, overlay) {
    $("video-state").textContent = text;
    const box = $("video-overlay");
    box.textContent = overlay || "";
    box.hidden = !overlay;
  }

  function closeWatch() {
    clearTimeout(watch.disconnectTimer);
    if (watch.pc) {
      const pc = watch.pc;
      watch.pc = null;
      try {
        pc.close();
      } catch (_) {
        // already closed
      }
    }
  }

  function stopWatch(text, overlay) {
    clearTimeout(watch.timer);
    watch.timer = null;
    closeWatch();
    const video = $("video");
    video.srcObject = null;
    videoState(text, overlay);
  }

  function retryWatch(ms) {
    clearTimeout(watch.timer);
    if (state.finished) return;
    watch.timer = setTimeout(startWatch, ms);
  }

  function iceGatheringComplete(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      function check() {
        if (pc.iceGatheringState === "complete") done();
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // The /watch connection's STUN/TURN servers (fresh TURN credentials) and ICE policy.
  async function watchConfiguration() {
    const { ok, status, body } = await api("/api/v1/ice-servers");
    if (!ok) throw new Error(`ICE servers: HTTP ${status}`);
    return window.rtPage.peerConfiguration(body);
  }

  async function startWatch() {
    watch.timer = null;
    if (state.finished || watch.pc) return;
    let configuration;
    try {
      configuration = await watchConfiguration();
    } catch (error) {
      if (error instanceof AuthError) return askForKey(error.message);
      videoState("Video unavailable, retrying", "Video unavailable; retrying…");
      return retryWatch(WATCH_RETRY_MS);
    }
    if (state.finished || watch.pc) return; // finished, or another start won meanwhile
    const pc = new RTCPeerConnection(configuration);
    watch.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    const video = $("video");

    pc.addEventListener("track", (event) => {
      if (watch.pc !== pc) return;
      const track = event.track;
      stream.addTrack(track);
      if (video.srcObject !== stream) video.srcObject = stream;
      video.play().catch(() => {}); // muted autoplay is allowed; unmute needs a click
      if (track.kind === "video") {
        track.addEventListener("mute", () => {
          if (watch.pc === pc) videoState("No video from the candidate", "Video paused…");
        });
        track.addEventListener("unmute", () => {
          if (watch.pc === pc) videoState("Live", "");
        });
      }
    });

    pc.addEventListener("connectionstatechange", () => {
      if (watch.pc !== pc) return;
      const s = pc.connectionState;
      if (s === "connected") {
        clearTimeout(watch.disconnectTimer);
        videoState("Live", video.readyState >= 2 ? "" : "Starting video…");
      } else if (s === "disconnected") {
        videoState("Connection unstable…", "Reconnecting video…");
        clearTimeout(watch.disconnectTimer);
        watch.disconnectTimer = setTimeout(() => {
          if (watch.pc === pc && pc.connectionState !== "connected") {
            closeWatch();
            retryWatch(0);
          }
        }, 4000);
      } else if (s === "failed" || s === "closed") {
        closeWatch();
        if (state.finished) return;
        videoState("Reconnecting…", "Reconnecting video…");
        retryWatch(WATCH_RETRY_MS);
      }
    });

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc);
      if (watch.pc !== pc) return;
      const { status, body, headers } = await api(sessionPath(sessionId, "/watch"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      if (watch.pc !== pc) return;
      if (status === 200 && body && body.sdp) {
        await pc.setRemoteDescription({ type: body.type || "answer", sdp: body.sdp });
        videoState("Connecting…", "Connecting to the candidate's video…");
        return;
      }
      closeWatch();
      if (status === 409) {
        videoState("Candidate not connected", "Waiting for the candidate to connect…");
        retryWatch(WATCH_RETRY_MS);
      } else if (status === 404 && body && body.error) {
        stopWatch("Unknown session", "No video: unknown session.");
      } else if (status === 404 || status === 405) {
        // This server has no relay (yet): charts still work; try again now and then.
        videoState("Video relay unavailable", "This server does not relay video.");
        retryWatch(15000);
      } else if (status === 503) {
        const after = Number(headers.get("retry-after")) || 5;
        videoState("Server busy", "The server is busy; retrying…");
        retryWatch(after * 1000);
      } else {
        videoState(`Video error (HTTP ${status})`, "Video unavailable; retrying…");
        retryWatch(5000);
      }
    } catch (error) {
      if (watch.pc === pc) closeWatch();
      if (error instanceof AuthError) return askForKey(error.message);
      videoState("Video unavailable, retrying", "Video unavailable; retrying…");
      retryWatch(WATCH_RETRY_MS);
    }
  }

  function setupUnmute() {
    const button = $("unmute");
    const video = $("video");
    const sync = () => {
      button.setAttribute("aria-pressed", String(!video.muted));
      button.querySelector(".label").textContent = video.muted ? "Unmute" : "Mute";
      button.querySelector(".icon-muted").toggleAttribute("hidden", !video.muted);
      button.querySelector(".icon-sound").toggleAttribute("hidden", video.muted);
    };
    button.addEventListener("click", () => {
      video.muted = !video.muted;
      if (!video.muted) video.play().catch(() => {});
      sync();
    });
    video.addEventListener("volumechange", sync);
    video.addEventListener("playing", () => {
      if (watch.pc && watch.pc.connectionState === "connected") videoState("Live", "");
      else $("video-overlay").hidden = true;
    });
    sync();
  }

  // ================================================================ signals websocket

  const ws = { socket: null, backoffMs: BACKOFF_MIN_MS, retryTimer: null };

  function onSignal(msg) {
    const t = typeof msg.t === "number" ? msg.t : Number(msg.t);
    if (!Number.isFinite(t) || state.signals.has(t)) return; // replayed by a backfill
    state.signals.set(t, msg);
    scheduleRender();
    if (state.session && !isNum(state.session.started_at) && !state.refreshed) {
      refreshSession(); // the candidate has joined: the record now has started_at
    }
  }

  async function refreshSession() {
    state.refreshed = true;
    try {
      const { ok, body } = await api(sessionPath(sessionId));
      if (ok && body) {
        state.session = body;
        renderHeader();
        if (state.final) renderReport(state.final);
      }
    } catch (_) {
      // the header keeps what it has
    }
  }

  async function onFinal(msg, fromReport = false) {
    if (state.finished && state.final) return;
    state.finished = true;
    state.final = msg;
    stopWatch("Interview ended", "The interview has ended.");
    setStatus("Interview ended", "ok");
    renderReport(msg);
    scheduleRender();
    // Live, the record now has ended_at and end_reason; GET /report already brought them.
    if (!fromReport) await refreshSession();
  }

  function signalsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${sessionPath(sessionId, "/signals")}?token=${encodeURIComponent(apiKey())}`;
  }

  function connectSignals() {
    clearTimeout(ws.retryTimer);
    ws.retryTimer = null;
    if (state.finished || !apiKey()) return;
    setStatus(ws.backoffMs > BACKOFF_MIN_MS ? "Reconnecting…" : "Connecting…", "warn");
    const socket = new WebSocket(signalsUrl());
    ws.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      ws.backoffMs = BACKOFF_MIN_MS;
      showError("");
      setStatus(state.signals.size ? "Live" : "Connected, waiting for media", "ok");
    });
    socket.addEventListener("message", (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (msg && msg.type === "signal") {
        onSignal(msg);
        if (!state.finished) setStatus("Live", "ok");
      } else if (msg && msg.type === "final") onFinal(msg);
    });
    socket.addEventListener("close", (event) => {
      if (ws.socket === socket) ws.socket = null;
      if (state.finished) return;
      if (event.code === 1008 || event.code === 4401 || event.code === 4403) {
        askForKey(event.reason || "The API key was not accepted.");
        return;
      }
      if (!opened) {
        explainRefusal();
        return;
      }
      scheduleReconnect(true);
    });
  }

  // A refused upgrade shows up as 1006 only; the REST API says whether it was the key.
  async function explainRefusal() {
    try {
      const { status } = await api(sessionPath(sessionId));
      if (status === 404) {
        setStatus("Unknown session", "bad");
        showError("There is no interview with this id.");
        return;
      }
    } catch (error) {
      if (error instanceof AuthError) return askForKey(error.message);
    }
    scheduleReconnect(false);
  }

  function scheduleReconnect(wasOpen) {
    const delay = wasOpen ? BACKOFF_MIN_MS : ws.backoffMs;
    ws.backoffMs = Math.min(ws.backoffMs * 2, BACKOFF_MAX_MS);
    const jittered = delay * (0.75 + Math.random() * 0.5);
    setStatus(`Disconnected, retrying in ${Math.ceil(jittered / 1000)} s`, "bad");
    ws.retryTimer = setTimeout(connectSignals, jittered);
  }

  window.addEventListener("online", () => {
    if (sessionId && !ws.socket && !state.finished && ws.retryTimer !== null) connectSignals();
  });

  // ================================================================ session view

  async function loadReport() {
    const { status, body } = await api(sessionPath(sessionId, "/report"));
    if (status !== 200 || !body || !body.final) return false;
    if (body.session) state.session = { ...state.session, ...body.session };
    for (const s of Array.isArray(body.signals) ? body.signals : []) onSignal(s);
    await onFinal(body.final, true);
    return true;
  }

  async function startSession() {
    document.body.dataset.view = "session";
    $("session-view").hidden = false;
    $("nav-current").hidden = false;
    $("nav-current").textContent = sessionId;
    setStatus("Loading…", "warn");
    createCharts();
    let record;
    try {
      const { status, body } = await api(sessionPath(sessionId));
      if (status === 404) {
        setStatus("Unknown session", "bad");
        showError("There is no interview with this id. It may have been erased.");
        $("session-view").hidden = true;
        return;
      }
      if (status !== 200 || !body) throw new Error(`HTTP ${status}`);
      record = body;
    } catch (error) {
      if (error instanceof AuthError) return askForKey(error.message);
      setStatus("Offline, retrying", "bad");
      setTimeout(startSession, 3000);
      $("session-view").hidden = true;
      return;
    }
    state.session = record;
    renderHeader();
    renderQuestion([]);

    if (record.status === "ended") {
      try {
        if (await loadReport()) return;
      } catch (error) {
        if (error instanceof AuthError) return askForKey(error.message);
      }
      // No final stored: the websocket still sends whatever there is.
      connectSignals();
      return;
    }

    $("live-view").hidden = false;
    videoState("Connecting…", "Waiting for the candidate's video…");
    fetch("/healthz", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((health) => {
        if (health && health.emotion === "off" && !state.final) setEmotionOff(true);
      })
      .catch(() => {});
    connectSignals();
    startWatch();
  }

  // ================================================================ page wiring

  function stopEverything() {
    clearTimeout(list.timer);
    clearInterval(list.tick);
    clearTimeout(ws.retryTimer);
    if (ws.socket) {
      const socket = ws.socket;
      ws.socket = null;
      state.finished = true; // no reconnects from the close handler
      socket.close();
    }
    clearTimeout(watch.timer);
    closeWatch();
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key").value = "";
    location.reload(); // a clean start with the new key
  });

  $("forget-key").addEventListener("click", () => {
    askForKey("");
  });

  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => setRange(Number(button.dataset.range)));
  }
  $("reset-zoom").addEventListener("click", () => setRange(state.range));
  $("print").addEventListener("click", () => window.print());
  $("download-csv").addEventListener("click", downloadCsv);
  setupUnmute();

  // Printing: charts drawn at a page's width, then back to the screen's.
  const printQuery = window.matchMedia("print");
  const onPrint = (printing) => {
    if (!Object.keys(charts).length) return;
    if (printing) resizeCharts(660);
    else resizeCharts();
  };
  window.addEventListener("beforeprint", () => onPrint(true));
  window.addEventListener("afterprint", () => onPrint(false));
  if (printQuery.addEventListener) printQuery.addEventListener("change", (e) => onPrint(e.matches));

  takeKeyFromFragment();
  $("nav-sessions").href = "/observe";
  if (!apiKey()) {
    askForKey("");
  } else {
    $("forget-key").hidden = false;
    if (sessionId) startSession();
    else startList();
  }
})();

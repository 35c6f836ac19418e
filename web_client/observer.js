// HR observer page: the list of interviews (/observe) and one interview (/observe/{id}): the
// candidate's relayed video, live charts, the current question, and the report once it ends.
//
// The page acts as whoever is signed in (common.js): an HR user's browser login (its cookie
// goes with every request, the login's CSRF token with every POST), or an API key kept in
// this tab's sessionStorage (from the URL fragment #token=... or the key form), sent as
// `Authorization: Bearer`, and as ?token= on the signals websocket because browsers cannot set
// headers there. Nobody signed in, or a login that has ended: the page sends to /login and
// comes back after. The websocket backfills every second so far on each (re)connect, so a late observer sees the whole
// timeline; seconds are de-duplicated by `t`, transcript lines by their start and end.
//
// The candidate's words (transcript lines) are untrusted text: they only ever reach the page
// through textContent.
"use strict";

(() => {
  const { $, pathSegmentAfter, setStatus, showError } = window.rtPage;
  const { takeKeyFromFragment, apiKey, storeKey, forgetKey, AuthError, api } = window.rtPage;
  const { signedIn, signIn, signOut, goToLogin } = window.rtPage;
  const { el, jsonRequest, errorDetail } = window.rtPage;
  const LIST_REFRESH_MS = 4000;
  const WATCH_RETRY_MS = 2000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // Websocket tries in a row that deliver nothing before the page stops trying (about 15 s
  // of backoff in all) and follows the session over REST instead.
  const WS_MAX_FAILURES = 5;
  const REPORT_POLL_MS = 5000; // how often the REST fallback asks whether the report exists
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
    cursor: "#b3261e",
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
    max_length: "Reached the maximum length",
  };

  const sessionId = pathSegmentAfter("observe");

  // ================================================================ small helpers

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const num = (v, digits) => (isNum(v) ? v.toFixed(digits) : "–");
  const pct = (v) => (isNum(v) ? `${Math.round(v * 100)}\u00a0%` : "–");
  const cap = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : "");

  // An emotion reading's `confidence` is 1 minus the normalised entropy of the model's seven
  // outputs: how peaked they are, not a probability of being right. It is shown in words.
  const CLARITY_HELP =
    "How clearly one expression stands out in the model's output (1 minus its normalised " +
    "entropy); not a probability that the reading is right.";
  function clarity(confidence) {
    if (!isNum(confidence)) return "";
    return confidence >= 0.5 ? "clear" : confidence >= 0.25 ? "mixed" : "unclear";
  }
  function reading(dominant, confidence) {
    const word = clarity(confidence);
    return cap(dominant) + (word ? ` (${word})` : "");
  }

  // m:ss (h:mm:ss past an hour), to the nearest second: the one rounding of every time and
  // length on this page, as the report's evidence rounds its seconds.
  function clock(seconds) {
    if (!isNum(seconds) || seconds < 0) return "–";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  // A moment on the interview's timeline (a transcript line, the charts' cursor), named by
  // the second that holds it, as the charts name their seconds: 3.6 s is in 0:03.
  const moment = (seconds) => clock(isNum(seconds) ? Math.floor(seconds) : seconds);

  function dateTime(epochS) {
    if (!isNum(epochS)) return "–";
    return new Date(epochS * 1000).toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  }

  // ================================================================ signing in

  // A refused credential. An ended browser login (no key in this tab) goes to /login and
  // back here after; a refused key is forgotten and the key form shown with `message`.
  function askForKey(message) {
    stopEverything();
    if (!apiKey()) {
      goToLogin();
      return;
    }
    forgetKey();
    $("list-view").hidden = true;
    $("session-view").hidden = true;
    $("forget-key").hidden = true;
    $("sign-out").hidden = true;
    $("whoami").hidden = true;
    $("login-link").href = `/login?next=${encodeURIComponent(location.pathname)}`;
    $("login").hidden = false;
    document.body.dataset.view = "login";
    setStatus("Signed out", "bad");
    showError(message || "");
    $("key").focus();
  }

  const sessionPath = (id, rest = "") => `/api/v1/sessions/${encodeURIComponent(id)}${rest}`;
  // A session's page; with a key, the key goes along in the fragment (a new tab starts with
  // an empty sessionStorage), never with the browser login (its cookie goes by itself).
  const observeLink = (id) =>
    `/observe/${encodeURIComponent(id)}` +
    (apiKey() ? `#token=${encodeURIComponent(apiKey())}` : "");

  // ================================================================ list view

  const list = { timer: null, tick: null, sessions: [], signature: "", filter: "all", query: "" };

  const STATUS_LABEL = { live: "Live", created: "Waiting", ended: "Ended", erased: "Erased" };
  const STATUS_RANK = { live: 0, created: 1, ended: 2, erased: 3 };

  // The one length of an interview everywhere on this page (the list, the session header,
  // the report): from the candidate joining to the end, or to now while it is live, in
  // seconds; shown through clock() and its one rounding.
  function sessionDuration(s, nowS) {
    if (!s || !isNum(s.started_at)) return null;
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
    transcript: new Map(), // segment key -> transcript message, live (de-duplicated)
    reportTranscript: null, // the report's top-level `transcript`, when it came over REST
    followTranscript: true, // the live panel scrolls with new lines (the user has not scrolled up)
    cursorT: null, // s on the media clock: the moment chosen from the transcript, or null
    cursorKey: null, // the transcript line it was chosen from
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

  // Dashed vertical lines where each question began, labelled Q1, Q2… The labels sit in a
  // band of their own above the plot (MARKER_BAND_PX of top padding), kept inside the plot's
  // width, so they never cover an axis label, the data, or each other (a label that would
  // touch the one before it is left out; its line stays).
  const MARKER_BAND_PX = 16;
  const markerBoxes = {}; // chart name -> label boxes drawn last, CSS px in the canvas

  function markerPlugin(name) {
    return {
      hooks: {
        draw: [
          (u) => {
            const boxes = [];
            markerBoxes[name] = boxes;
            if (!markers.length) return;
            const { ctx } = u;
            const { top, height, left, width } = u.bbox;
            const dpr = window.uPlot.pxRatio || window.devicePixelRatio || 1;
            const fontPx = 11;
            ctx.save();
            ctx.strokeStyle = COLORS.marker;
            ctx.fillStyle = COLORS.axis;
            ctx.lineWidth = dpr;
            ctx.font = `${fontPx * dpr}px system-ui, sans-serif`;
            ctx.textBaseline = "bottom";
            let lastRight = -Infinity;
            for (const m of markers) {
              const x = Math.round(u.valToPos(m.t, "x", true));
              if (x < left || x > left + width) continue;
              ctx.setLineDash([4 * dpr, 3 * dpr]);
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              const textWidth = ctx.measureText(m.label).width;
              const tx = Math.max(left, Math.min(x + 3 * dpr, left + width - textWidth));
              if (tx < lastRight + 4 * dpr) continue;
              const ty = top - 2 * dpr;
              ctx.fillText(m.label, tx, ty);
              lastRight = tx + textWidth;
              boxes.push({
                label: m.label,
                left: tx / dpr,
                right: (tx + textWidth) / dpr,
                top: ty / dpr - fontPx,
                bottom: ty / dpr,
              });
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

  // The legend shows the second under the cursor chosen from the transcript, else the latest
  // second, while the pointer is not over a chart.
  function showLatest(u) {
    const n = u.data[0].length;
    if (!n || (u.cursor.idx !== null && u.cursor.idx !== undefined)) return;
    const pinned = cursorIndex();
    u.setLegend({ idx: pinned === null ? n - 1 : pinned }, false);
  }

  // The row of the second that holds the chosen moment (a signal's `t` covers [t, t + 1)),
  // or the last second before it where that one was not measured; null without a cursor.
  function cursorIndex() {
    if (!isNum(state.cursorT) || !chartRows.length) return null;
    let found = null;
    for (let i = 0; i < chartRows.length && chartRows[i].t <= state.cursorT; i++) found = i;
    return found === null ? 0 : found;
  }

  // The chosen moment, a solid line across every chart (left out on paper).
  function cursorPlugin() {
    return {
      hooks: {
        draw: [
          (u) => {
            if (!isNum(state.cursorT) || printing) return;
            const { ctx } = u;
            const { top, height, left, width } = u.bbox;
            const x = Math.round(u.valToPos(state.cursorT, "x", true));
            if (x < left || x > left + width) return;
            const dpr = window.uPlot.pxRatio || window.devicePixelRatio || 1;
            ctx.save();
            ctx.strokeStyle = COLORS.cursor;
            ctx.lineWidth = 2 * dpr;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.restore();
          },
        ],
      },
    };
  }

  function legendPlugin() {
    return { hooks: { setCursor: [showLatest], setData: [showLatest] } };
  }

  // Chart heights (CSS px) on screen and on paper; on paper the four fit on one A4 page.
  const CHART_HEIGHTS = {
    screen: { emotion: 220, fluency: 200, speech: 200, face: 160 },
    print: { emotion: 170, fluency: 165, speech: 165, face: 120 },
  };
  // Charts are drawn this wide for printing (CSS px): about the printable width of A4 and
  // Letter paper; print CSS scales them to the exact width of the page.
  const PRINT_WIDTH_PX = 700;
  let printing = false;

  function baseOptions(name, el, series, axes, scales, extra = {}) {
    return {
      width: Math.max(280, el.clientWidth || 600),
      height: CHART_HEIGHTS.screen[name],
      series: [{ label: "Time", value: (u, v) => (v === null ? "–" : clock(v)) }, ...series],
      axes: [axisTime(), ...axes],
      scales: { x: { time: false }, ...scales },
      cursor: { sync: { key: "rt-observer" }, drag: { x: true, y: false, setScale: false } },
      legend: { live: true },
      padding: [MARKER_BAND_PX, null, null, null],
      plugins: [markerPlugin(name), cursorPlugin(), zoomPlugin(), legendPlugin()],
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
        "emotion",
        emotionEl,
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
        "fluency",
        fluencyEl,
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
        "speech",
        speechEl,
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
        "face",
        faceEl,
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

  function resizeCharts() {
    for (const [name, u] of Object.entries(charts)) {
      const box = $(`chart-${name}`);
      const width = printing ? PRINT_WIDTH_PX : Math.max(280, Math.floor(box.clientWidth || 600));
      const height = CHART_HEIGHTS[printing ? "print" : "screen"][name];
      if (Math.abs(u.width - width) > 1 || u.height !== height) u.setSize({ width, height });
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
    const tile = $("now-emotion");
    if (state.emotionOff) tile.textContent = "Not measured";
    else if (last.emotion && last.emotion.dominant) {
      tile.textContent = reading(last.emotion.dominant, last.emotion.confidence);
    } else tile.textContent = "no face";
    tile.title = state.emotionOff ? "" : CLARITY_HELP;
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

  // ================================================================ transcript

  // A transcript segment is one utterance: {question, start, end, text, words}, its times in
  // seconds on the signals' clock. Live messages (and the backfill, again on each reconnect)
  // are kept once each, by their start and end; the report lists the final's segments.

  const segmentKey = (seg) => `${Number(seg.start).toFixed(3)}-${Number(seg.end).toFixed(3)}`;

  function isSegment(seg) {
    return seg && isNum(seg.start) && isNum(seg.end) && typeof seg.text === "string";
  }

  // The heading of a question's lines: its number and text (from the session's record, else
  // the final's per-question entries).
  function questionHeading(index) {
    if (!Number.isInteger(index)) return "Before the first question";
    const fromSession = sessionQuestions()[index];
    const fromFinal =
      state.final && Array.isArray(state.final.questions)
        ? state.final.questions.find((q) => q.index === index)
        : null;
    const text = (fromSession && fromSession.text) || (fromFinal && fromFinal.text) || "";
    return text ? `Question ${index + 1}: ${text}` : `Question ${index + 1}`;
  }

  // One line: a button (keyboard and pointer alike) that moves the charts' cursor to the
  // moment the utterance began.
  function transcriptLine(seg) {
    const text = seg.text.trim();
    const button = el(
      "button",
      {
        type: "button",
        class: "t-line",
        "data-key": segmentKey(seg),
        "data-start": seg.start,
        "data-end": seg.end,
      },
      el("span", { class: "t-time", text: moment(seg.start) }),
      el("span", {
        class: text ? "t-text" : "t-text t-unheard",
        text: text || "(speech, no words recognised)",
      }),
    );
    if (isNum(state.cursorT) && segmentKey(seg) === state.cursorKey) {
      button.setAttribute("aria-current", "time");
    }
    button.addEventListener("click", () => {
      setCursor(seg.start, segmentKey(seg));
      if (button.closest("#transcript-section")) revealCharts();
    });
    return el("li", { "data-start": seg.start }, button);
  }

  // The list of a question's lines in `container`, made (in question order, before the first
  // question first) when it has none yet.
  function questionGroup(container, question, headingTag) {
    const q = Number.isInteger(question) ? question : -1;
    let next = null;
    for (const group of container.children) {
      const gq = Number(group.dataset.question);
      if (gq === q) return group.querySelector("ol");
      if (gq > q && next === null) next = group;
    }
    const headingId = `${container.id}-q${q + 1}`;
    // A group, not a region: one landmark per question would crowd the page's landmarks.
    const group = el(
      "div",
      { class: "t-group", role: "group", "data-question": q, "aria-labelledby": headingId },
      el(headingTag, { id: headingId, class: "t-heading", text: questionHeading(question) }),
      el("ol", { class: "t-lines" }),
    );
    container.insertBefore(group, next);
    return group.querySelector("ol");
  }

  // Puts a line in its question's list, in order of its start.
  function placeLine(container, seg, headingTag) {
    const lines = questionGroup(container, seg.question, headingTag);
    const li = transcriptLine(seg);
    const after = [...lines.children].find((x) => Number(x.dataset.start) > seg.start) || null;
    lines.insertBefore(li, after);
    return li;
  }

  const nearBottom = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < 24;

  function onTranscript(msg) {
    if (!isSegment(msg)) return;
    const key = segmentKey(msg);
    if (state.transcript.has(key)) return; // replayed by a backfill
    state.transcript.set(key, msg);
    const box = $("transcript-live");
    const follow = state.followTranscript;
    placeLine(box, msg, "h3");
    $("transcript-live-empty").hidden = true;
    document.body.dataset.transcriptLines = String(state.transcript.size);
    if (follow) box.scrollTop = box.scrollHeight;
    else $("transcript-latest").hidden = false;
  }

  function setupTranscriptPanel() {
    const box = $("transcript-live");
    box.addEventListener("scroll", () => {
      state.followTranscript = nearBottom(box);
      if (state.followTranscript) $("transcript-latest").hidden = true;
    });
    $("transcript-latest").addEventListener("click", () => {
      box.scrollTop = box.scrollHeight;
      state.followTranscript = true;
      $("transcript-latest").hidden = true;
    });
  }

  // The report's transcript, from the final (or, from an older final, the report's own list),
  // under question headings; says plainly when speech was not transcribed, and which spans
  // are missing when the final could not wait for them.
  function renderReportTranscript(final) {
    const fromFinal = Array.isArray(final.transcript) ? final.transcript : null;
    const segments = (fromFinal || state.reportTranscript || []).filter(isSegment);
    segments.sort((a, b) => a.start - b.start);
    const box = $("transcript-report");
    box.replaceChildren();
    for (const seg of segments) placeLine(box, seg, "h3");
    const note = $("transcript-note");
    const on = final.transcription === "on" || (final.transcription === undefined && segments.length);
    if (final.transcription === "off") {
      note.textContent = "Speech was not transcribed in this interview: transcription was off.";
    } else if (!on) {
      note.textContent = "This interview was not transcribed.";
    } else if (!segments.length) {
      note.textContent = "No words were transcribed.";
    } else note.textContent = "";
    note.hidden = !note.textContent;
    box.hidden = segments.length === 0;
    $("transcript-report-help").hidden = segments.length === 0;
    $("transcript-section").hidden = false;
    // On paper, a transcript with no line is left out: the report's facts say why.
    $("transcript-section").classList.toggle("no-lines", segments.length === 0);

    const missing = $("transcript-missing");
    if (final.transcript_complete === false) {
      const spans = (Array.isArray(final.transcript_missing) ? final.transcript_missing : [])
        .filter((m) => m && isNum(m.start) && isNum(m.end))
        .map((m) => `${moment(m.start)}–${clock(Math.ceil(m.end))}`);
      missing.textContent = spans.length
        ? `The transcript is incomplete. Speech at ${listText(spans)} was not transcribed ` +
          "before the report was made, so it is missing here."
        : "The transcript is incomplete: some speech was not transcribed before the report " +
          "was made.";
      missing.hidden = false;
    } else {
      missing.textContent = "";
      missing.hidden = true;
    }
    document.body.dataset.reportTranscriptLines = String(segments.length);
  }

  // "a", "a and b", "a, b and c".
  function listText(items) {
    if (items.length <= 1) return items.join("");
    return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
  }

  // ================================================================ charts' cursor

  // Moves the charts' cursor to `t` (s): a line across every chart, and the legends show
  // that second's values. The whole interview is shown again if the span on show leaves it out.
  function setCursor(t, key) {
    state.cursorT = t;
    state.cursorKey = key || null;
    const shown = Object.values(charts)[0];
    if (shown && shown.scales.x && (t < shown.scales.x.min || t > shown.scales.x.max)) setRange(0);
    for (const u of Object.values(charts)) {
      u.redraw(false);
      showLatest(u);
    }
    for (const line of document.querySelectorAll(".t-line")) {
      if (key && line.dataset.key === key) line.setAttribute("aria-current", "time");
      else line.removeAttribute("aria-current");
    }
    const row = chartRows[cursorIndex()];
    $("cursor-text").textContent =
      row && row.t === Math.floor(t)
        ? `Cursor at ${moment(t)}: the legends show that second.`
        : row
          ? `Cursor at ${moment(t)}: that second was not measured; the legends show ${moment(row.t)}.`
          : `Cursor at ${moment(t)}.`;
    $("cursor-readout").hidden = false;
    document.body.dataset.cursorT = String(t);
  }

  function clearCursor() {
    state.cursorT = null;
    state.cursorKey = null;
    for (const u of Object.values(charts)) {
      u.redraw(false);
      showLatest(u);
    }
    for (const line of document.querySelectorAll(".t-line[aria-current]")) {
      line.removeAttribute("aria-current");
    }
    $("cursor-readout").hidden = true;
    delete document.body.dataset.cursorT;
  }

  // Brings the charts on screen when little of them is (a line chosen in the report's
  // transcript, below them), scrolling no further than needed.
  function revealCharts() {
    const grid = $("charts").querySelector(".chart-grid");
    const box = grid.getBoundingClientRect();
    const visible = Math.min(box.bottom, window.innerHeight) - Math.max(box.top, 0);
    if (visible >= Math.min(240, box.height)) return;
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    grid.scrollIntoView({ block: "nearest", behavior: smooth ? "smooth" : "auto" });
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
    const duration = sessionDuration(s, Date.now() / 1000);
    if (duration !== null) parts.push(`Length ${clock(duration)}`);
    parts.push(`Session ${sessionId}`);
    $("session-meta").textContent = parts.join(" · ");
    const status = state.finished ? "ended" : rows.length ? "live" : s.status || "";
    const badge = $("session-state");
    badge.dataset.state = status;
    badge.textContent = STATUS_LABEL[status] || cap(status);
  }

  // ================================================================ report

  function lengthText(s) {
    const d = sessionDuration(s, Date.now() / 1000);
    return d === null ? "–" : clock(d);
  }

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
      ["Length", lengthText(s)],
      ["Ended", END_REASONS[final.end_reason] || final.end_reason || "–"],
      ["Expression analysis", final.emotion_analysis === "off" ? "Off" : "On"],
    ];
    if (final.transcription === "on" || final.transcription === "off") {
      facts.push(["Transcription", final.transcription === "off" ? "Off" : "On"]);
    }
    const job = jobOf(final);
    if (job) {
      facts[1] = ["Job", jobTitle(job)];
      facts.splice(
        2,
        0,
        ["Threshold", isNum(final.threshold) ? `${Math.round(final.threshold)} / 100` : "–"],
        ["Recommendation", RECOMMENDATIONS[final.recommendation] || final.recommendation || "–"],
      );
    }
    $("report-facts").replaceChildren(
      ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))),
    );

    const notes = Array.isArray(final.notes) ? final.notes : [];
    $("report-notes").replaceChildren(...notes.map((n) => el("li", { text: String(n) })));
    $("report-notes").hidden = notes.length === 0;

    if (job) renderCompetencies(final);
    else {
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
              barFill(rounded === null ? "" : scoreTone(rounded), rounded === null ? 0 : value),
            ),
            el("p", { class: "evidence", text: dim && dim.evidence ? String(dim.evidence) : "" }),
          );
        }),
      );
    }
    renderJobParts(final, job);

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
          el("td", { class: "num", text: speakingText(q) }),
          el("td", { class: "num", text: num(q.rate_sps, 1) }),
          el("td", { class: "num", text: isNum(q.pause_count) ? String(q.pause_count) : "–" }),
          el("td", { class: "num", text: pct(q.face) }),
          el("td", { class: "col-emotion", text: questionReading(q, index), title: CLARITY_HELP }),
        );
      }),
    );
    $("questions-breakdown").hidden = breakdown.length === 0;
    $("questions-empty").hidden = breakdown.length > 0;
    renderReportTranscript(final);

    if (final.emotion_analysis === "off") setEmotionOff(true);
  }

  // ================================================================ report for a job

  // With a job, the final rates what the candidate said against the job's competencies:
  // `job`, `recommendation`, `threshold`, `competencies` (each with its quotes and when they
  // were said) and `delivery` (how the candidate came across, for information).
  const RECOMMENDATIONS = {
    advance: "Advance to the human interview",
    review: "Review: a person looks again; not a rejection",
  };
  const DECISIONS = { advance: "Advance", reject: "Reject", hold: "Hold" };

  const jobOf = (final) => (final && final.job && typeof final.job === "object" ? final.job : null);

  function jobTitle(job) {
    const title = job.title || job.id || "Job";
    return Number.isInteger(job.version) ? `${title} (version ${job.version})` : title;
  }

  // Whether a decision goes against the recommendation (as the server judges it): not
  // advancing a candidate recommended to advance, or advancing one left for review.
  function againstRecommendation(decision, recommendation) {
    if (recommendation === "advance") return decision !== "advance";
    if (recommendation === "review") return decision === "advance";
    return false;
  }

  // One bar per competency, heaviest first: its name, score and weight, "not answered" when
  // no answer touched it, and its evidence: the candidate's words, each a button to that
  // moment when its time is known.
  function renderCompetencies(final) {
    const competencies = Object.entries(final.competencies || {}).sort(
      (a, b) => ((b[1] || {}).weight || 0) - ((a[1] || {}).weight || 0),
    );
    $("dimensions").replaceChildren(
      ...competencies.map(([id, c]) => {
        const name = (c && c.name) || id;
        const value = c && isNum(c.score) ? c.score : null;
        const rounded = value === null ? null : Math.round(value);
        const answered = !!(c && c.answered);
        const weight = c && isNum(c.weight) ? `weight ${Math.round(c.weight * 100)}%` : "";
        const quotes = Array.isArray(c && c.evidence) ? c.evidence : [];
        const times = Array.isArray(c && c.evidence_times) ? c.evidence_times : [];
        return el(
          "div",
          { class: "dimension competency", "data-competency": id, "data-answered": answered },
          el(
            "div",
            { class: "dim-head" },
            el("span", { class: "dim-name", text: name }),
            el("span", { class: "dim-weight muted small", text: weight }),
            answered ? null : el("span", { class: "not-answered", text: "not answered" }),
            el("span", { class: "dim-score", text: rounded === null ? "–" : String(rounded) }),
          ),
          el(
            "div",
            {
              class: "dim-bar",
              role: "meter",
              "aria-label": `${name} score`,
              "aria-valuemin": 0,
              "aria-valuemax": 100,
              "aria-valuenow": rounded === null ? 0 : rounded,
            },
            barFill(rounded === null ? "" : scoreTone(rounded), rounded === null ? 0 : value),
          ),
          quotes.length
            ? el("ul", { class: "quotes" }, ...quotes.map((q, i) => quoteItem(q, times[i])))
            : el("p", {
                class: "evidence",
                text: answered ? "No quote." : "Not answered: no question that targets it was answered.",
              }),
        );
      }),
    );
  }

  // A quote, verbatim; with its time, a button that shows that moment.
  function quoteItem(text, timed) {
    const quoted = `\u201c${String(text)}\u201d`;
    const start = timed && isNum(timed.start) ? timed.start : null;
    if (start === null) return el("li", {}, el("span", { class: "quote", text: quoted }));
    const button = el(
      "button",
      { type: "button", class: "quote", "data-t": start, title: "Show this moment" },
      el("span", { class: "t-time", text: moment(start) }),
      el("span", { class: "quote-text", text: quoted }),
    );
    button.addEventListener("click", () => showQuote(start));
    return el("li", {}, button);
  }

  // Moves the charts' cursor to `t` and brings the report transcript's line around it into
  // view (the line that holds `t`, else the last one begun before it).
  function showQuote(t) {
    let around = null;
    for (const line of document.querySelectorAll("#transcript-report .t-line")) {
      const start = Number(line.dataset.start);
      const end = Number(line.dataset.end);
      if (start <= t + 0.05 && (t <= end || !around || start >= Number(around.dataset.start))) {
        around = line;
        if (t <= end) break;
      }
    }
    setCursor(t, around ? around.dataset.key : null);
    if (around) {
      const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      around.scrollIntoView({ block: "center", behavior: smooth ? "smooth" : "auto" });
    }
  }

  // The parts of the report only a job has: the score's name, the delivery panel and the
  // decision form, with the decisions so far. Without a job, all hidden.
  function renderJobParts(final, job) {
    $("score-label").textContent = job ? "job-fit score" : "overall score";
    $("dimensions-title").textContent = job ? "Competencies" : "Dimensions";
    $("competencies-help").hidden = !job;
    $("delivery").hidden = !job;
    $("decision").hidden = !job;
    if (!job) return;

    const delivery = final.delivery && typeof final.delivery === "object" ? final.delivery : {};
    const weight = isNum(delivery.weight) ? delivery.weight : 0;
    $("delivery-weight").textContent =
      `How the candidate came across. Its weight in the job-fit score: ${Math.round(weight * 100)}\u00a0%` +
      (weight ? "." : ", unless the job gives it one; the score rests on what was said.");
    const dims = Object.entries(delivery.dimensions || {});
    $("delivery-dimensions").replaceChildren(
      ...dims.map(([name, d]) =>
        el(
          "div",
          { "data-dimension": name },
          el("dt", { text: cap(name) }),
          el("dd", { text: d && isNum(d.score) ? String(Math.round(d.score)) : "–" }),
        ),
      ),
    );
    if (!dims.length) {
      $("delivery-dimensions").replaceChildren(
        el("div", {}, el("dt", { text: "Nothing measured" }), el("dd", { text: "–" })),
      );
    }
    updateReasonRequired();
    loadDecisions();
  }

  function chosenDecision() {
    const checked = $("decision-form").querySelector("input[name=decision]:checked");
    return checked ? checked.value : "";
  }

  function updateReasonRequired() {
    const final = state.final || {};
    const needed = againstRecommendation(chosenDecision(), final.recommendation);
    $("decision-reason-required").hidden = !needed;
    $("decision-reason").setAttribute("aria-required", needed ? "true" : "false");
  }

  // The decisions so far, oldest first (the latest stands), from the server.
  async function loadDecisions() {
    let result;
    try {
      result = await api(sessionPath(sessionId, "/decision"));
    } catch (error) {
      if (error instanceof AuthError) return askForKey(error.message);
      return;
    }
    const decisions = result.ok && result.body && Array.isArray(result.body.decisions)
      ? result.body.decisions
      : [];
    $("decision-list").replaceChildren(
      ...decisions.map((d) =>
        el(
          "li",
          { "data-decision": d.decision },
          el("strong", { text: DECISIONS[d.decision] || cap(String(d.decision)) }),
          el("span", { text: ` by ${d.reviewer || "–"}, ${dateTime(d.at)}` }),
          d.reason ? el("span", { class: "decision-reason", text: `: ${d.reason}` }) : null,
        ),
      ),
    );
    $("decision-list").hidden = decisions.length === 0;
    $("decision-none").hidden = decisions.length > 0;
    document.body.dataset.decisions = String(decisions.length);
  }

  async function submitDecision(event) {
    event.preventDefault();
    const error = $("decision-error");
    const decision = chosenDecision();
    const reviewer = $("decision-reviewer").value.trim();
    const problem = !decision
      ? "Choose advance, reject or hold."
      : !reviewer
        ? "Name the reviewer: the person who decides."
        : "";
    error.textContent = problem;
    error.hidden = !problem;
    if (problem) return;
    const button = $("decision-submit");
    button.disabled = true;
    $("decision-status").textContent = "Recording…";
    try {
      const result = await api(
        sessionPath(sessionId, "/decision"),
        jsonRequest("POST", { decision, reviewer, reason: $("decision-reason").value }),
      );
      if (result.status === 201) {
        $("decision-reason").value = "";
        $("decision-status").textContent = "Recorded.";
        await loadDecisions();
      } else {
        $("decision-status").textContent = "";
        error.textContent = `Not recorded: ${errorDetail(result)}`;
        error.hidden = false;
      }
    } catch (e) {
      if (e instanceof AuthError) return askForKey(e.message);
      $("decision-status").textContent = "";
      error.textContent = "Not recorded: the server could not be reached.";
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  // The bar's width is set through the CSSOM: the CSP allows no inline style attribute.
  function barFill(tone, value) {
    const fill = el("span", { class: tone });
    fill.style.width = `${value ? Math.max(1, Math.min(100, value)) : 0}%`;
    return fill;
  }

  // A question's clearest-read expression: its most frequent dominant label and how clearly
  // the model read it there (mean confidence over the question's seconds with that label).
  function questionReading(q, index) {
    if (!q.dominant_emotion) return "–";
    const seconds = sortedSignals().filter(
      (s) => s.question === index && s.emotion && s.emotion.dominant === q.dominant_emotion,
    );
    const cs = seconds.map((s) => s.emotion.confidence).filter(isNum);
    const mean = cs.length ? cs.reduce((a, b) => a + b, 0) / cs.length : null;
    return reading(q.dominant_emotion, mean);
  }

  // Speech time and speaking share, as the rubric defines them (speech seconds out of the
  // seconds heard); older reports carry only the share.
  function speakingText(q) {
    if (!isNum(q.speech_ratio)) return "–";
    return isNum(q.speech_s) ? `${Math.round(q.speech_s)} s (${pct(q.speech_ratio)})` : pct(q.speech_ratio);
  }

  function setEmotionOff(off) {
    state.emotionOff = off;
    $("emotion-off").hidden = !off;
    $("definition-expression").hidden = off;
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
        // The candidate is connected; without live signals the record says it is live.
        if (state.session && state.session.status !== "live" && !state.refreshed) refreshSession();
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
        // Not live: the candidate has not joined yet, or the interview is over. The report
        // says which, without an audit row until there is one to show.
        if (await checkReport()) return;
        if (state.finished) return;
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

  // The signals websocket. Every close that did not bring the final is followed by a REST
  // check (GET /report: 200 once the report exists, 409 while it does not, never audited
  // before it is shown), so an ended interview shows its report however the socket ended.
  // Tries that deliver nothing back off up to BACKOFF_MAX_MS; after WS_MAX_FAILURES of them
  // in a row the page stops trying, says so, and polls the report over REST instead.
  const ws = {
    socket: null,
    backoffMs: BACKOFF_MIN_MS,
    retryTimer: null,
    failures: 0, // tries in a row that delivered no message
    attempts: 0, // every websocket opened (body.dataset.wsAttempts, for the tests)
    pollTimer: null,
  };

  function onSignal(msg) {
    const t = typeof msg.t === "number" ? msg.t : Number(msg.t);
    if (!Number.isFinite(t) || state.signals.has(t)) return; // replayed by a backfill
    state.signals.set(t, msg);
    scheduleRender();
    if (state.session && !isNum(state.session.started_at) && !state.refreshed) {
      refreshSession(); // the candidate has joined: the record now has started_at
    }
  }

  // Fetches the session record again, and again a few times until it has `ended_at` once
  // the interview is over (the final is published just before the record is marked ended).
  async function refreshSession() {
    state.refreshed = true;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const { ok, body } = await api(sessionPath(sessionId));
        if (ok && body) {
          state.session = body;
          renderHeader();
          if (state.final) renderReport(state.final);
          if (!state.final || isNum(body.ended_at)) return;
        }
      } catch (error) {
        if (error instanceof AuthError) return askForKey(error.message);
      }
      await new Promise((resolve) => setTimeout(resolve, 400 * (attempt + 1)));
    }
  }

  async function onFinal(msg, fromReport = false) {
    if (state.finished && state.final) return;
    state.finished = true;
    state.final = msg;
    stopSignals();
    stopWatch("Interview ended", "The interview has ended.");
    showError("");
    setStatus("Interview ended", "ok");
    renderReport(msg);
    scheduleRender();
    // Live, the record now has ended_at and end_reason; GET /report already brought them.
    if (!fromReport) await refreshSession();
  }

  // The interview ended without a report to show (erased, or no final was stored).
  function endedWithoutReport(detail) {
    state.finished = true;
    stopSignals();
    stopWatch("Interview ended", "The interview has ended.");
    setStatus("Interview ended", "");
    showError(`This interview has ended, but it has no report${detail ? ` (${detail})` : ""}.`);
  }

  // Asks the REST API whether the interview is over: shows the report and resolves true when
  // it is (or when there is nothing more to follow); false while it is not over.
  async function checkReport() {
    let reply;
    try {
      reply = await api(sessionPath(sessionId, "/report"));
    } catch (error) {
      if (error instanceof AuthError) {
        askForKey(error.message);
        return true;
      }
      return false; // offline: the caller tries again later
    }
    const { status, body } = reply;
    if (status === 200 && body && body.final) {
      if (body.session) state.session = { ...state.session, ...body.session };
      for (const s of Array.isArray(body.signals) ? body.signals : []) onSignal(s);
      if (Array.isArray(body.transcript)) state.reportTranscript = body.transcript;
      await onFinal(body.final, true);
      return true;
    }
    if (status === 404) {
      state.finished = true;
      stopSignals();
      stopWatch("Unknown session", "No video: unknown session.");
      setStatus("Unknown session", "bad");
      showError("There is no interview with this id. It may have been erased.");
      return true;
    }
    const detail = body && body.detail ? String(body.detail) : "";
    if (status === 409 && /session is (ended|erased)/.test(detail)) {
      endedWithoutReport(detail.split(";")[0]);
      return true;
    }
    return false;
  }

  function stopSignals() {
    clearTimeout(ws.retryTimer);
    ws.retryTimer = null;
    clearTimeout(ws.pollTimer);
    ws.pollTimer = null;
    if (ws.socket) {
      const socket = ws.socket;
      ws.socket = null;
      socket.close();
    }
  }

  function signalsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${sessionPath(sessionId, "/signals")}`;
    // The browser login's cookie goes with a same-origin websocket by itself.
    return apiKey() ? `${url}?token=${encodeURIComponent(apiKey())}` : url;
  }

  function connectSignals() {
    clearTimeout(ws.retryTimer);
    ws.retryTimer = null;
    if (state.finished || (!apiKey() && !signedIn.me)) return;
    setStatus(ws.failures > 0 ? "Reconnecting…" : "Connecting…", "warn");
    const socket = new WebSocket(signalsUrl());
    ws.socket = socket;
    ws.attempts += 1;
    document.body.dataset.wsAttempts = String(ws.attempts);
    let delivered = false;
    socket.addEventListener("open", () => {
      if (ws.socket !== socket) return;
      setStatus(state.signals.size ? "Live" : "Connected, waiting for media", "ok");
    });
    socket.addEventListener("message", (event) => {
      if (ws.socket !== socket) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      if (!delivered) {
        delivered = true;
        ws.failures = 0;
        ws.backoffMs = BACKOFF_MIN_MS;
        showError("");
      }
      if (msg && msg.type === "signal") {
        onSignal(msg);
        if (!state.finished) setStatus("Live", "ok");
      } else if (msg && msg.type === "transcript") onTranscript(msg);
      else if (msg && msg.type === "final") onFinal(msg);
    });
    socket.addEventListener("close", (event) => {
      if (ws.socket !== socket) return; // closed on purpose
      ws.socket = null;
      if (state.finished) return;
      if (event.code === 1008 || event.code === 4401 || event.code === 4403) {
        askForKey(event.reason || "The API key was not accepted.");
        return;
      }
      if (!delivered) ws.failures += 1;
      afterClose(delivered);
    });
  }

  async function afterClose(delivered) {
    setStatus("Disconnected, checking…", "warn");
    if (await checkReport()) return;
    if (state.finished) return;
    if (ws.failures >= WS_MAX_FAILURES) {
      giveUpSignals();
      return;
    }
    // A socket that was delivering reconnects at once (the backfill fills any gap).
    const delay = delivered ? BACKOFF_MIN_MS : ws.backoffMs;
    if (!delivered) ws.backoffMs = Math.min(ws.backoffMs * 2, BACKOFF_MAX_MS);
    const jittered = delay * (0.75 + Math.random() * 0.5);
    setStatus(`Disconnected, retrying in ${Math.ceil(jittered / 1000)} s`, "bad");
    ws.retryTimer = setTimeout(connectSignals, jittered);
  }

  // The websocket cannot be opened (a proxy or server without websocket support, say): the
  // live charts stay empty, the video still plays, and the report comes over REST.
  function giveUpSignals() {
    setStatus("Live signals unavailable", "bad");
    document.body.dataset.signals = "unavailable";
    if (!state.signals.size) {
      $("charts-empty").textContent = "No live signals; the timeline comes with the report.";
    }
    showError(
      `The live signals could not be received: the connection for them (a websocket) failed ` +
        `${ws.failures} times in a row, so this page has stopped trying. The video still ` +
        "plays where the candidate is connected, and the report appears here as soon as the " +
        "interview ends. Reload the page to try the live signals again.",
    );
    pollReport();
  }

  async function pollReport() {
    clearTimeout(ws.pollTimer);
    ws.pollTimer = null;
    if (state.finished) return;
    if (await checkReport()) return;
    if (!state.finished) ws.pollTimer = setTimeout(pollReport, REPORT_POLL_MS);
  }

  window.addEventListener("online", () => {
    if (sessionId && !ws.socket && !state.finished && ws.retryTimer !== null) connectSignals();
  });

  // ================================================================ session view

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
      if (await checkReport()) return;
      // No final stored: the websocket still sends whatever there is.
      connectSignals();
      return;
    }

    $("live-view").hidden = false;
    videoState("Connecting…", "Waiting for the candidate's video…");
    // With the HR key, /healthz says whether emotion inference and speech-to-text run
    // (without it, only "ok").
    api("/healthz")
      .then(({ body }) => {
        if (body && body.emotion === "off" && !state.final) setEmotionOff(true);
        if (body && body.transcription === "off" && !state.transcript.size) {
          $("transcript-live-empty").textContent =
            "Speech is not transcribed on this server, so there is no transcript.";
          $("transcript-help").hidden = true;
        }
      })
      .catch(() => {});
    connectSignals();
    startWatch();
  }

  // ================================================================ page wiring

  function stopEverything() {
    clearTimeout(list.timer);
    clearInterval(list.tick);
    state.finished = true; // no reconnects from close handlers
    stopSignals();
    clearTimeout(watch.timer);
    closeWatch();
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    storeKey(key);
    $("key").value = "";
    location.reload(); // a clean start with the new key
  });

  $("forget-key").addEventListener("click", () => {
    askForKey("");
  });

  $("sign-out").addEventListener("click", async () => {
    $("sign-out").disabled = true;
    if (!(await signOut())) {
      $("sign-out").disabled = false;
      showError("You are still signed in: the server could not be reached. Try again.");
    }
  });

  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => setRange(Number(button.dataset.range)));
  }
  $("reset-zoom").addEventListener("click", () => setRange(state.range));
  $("print").addEventListener("click", () => window.print());
  $("download-csv").addEventListener("click", downloadCsv);
  $("cursor-clear").addEventListener("click", clearCursor);
  $("decision-form").addEventListener("submit", submitDecision);
  $("decision-form").addEventListener("change", updateReasonRequired);
  setupUnmute();
  setupTranscriptPanel();

  // Printing: charts drawn for the page (PRINT_WIDTH_PX, shorter), then back to the screen's.
  const printQuery = window.matchMedia("print");
  const onPrint = (on) => {
    printing = on;
    if (Object.keys(charts).length) resizeCharts();
  };
  window.addEventListener("beforeprint", () => onPrint(true));
  window.addEventListener("afterprint", () => onPrint(false));
  if (printQuery.addEventListener) printQuery.addEventListener("change", (e) => onPrint(e.matches));

  // Layout figures of the charts, in CSS px, for the browser tests and for debugging:
  // where the question labels were drawn against the plot area, and how wide the charts are
  // against their container (the page's width when printing).
  window.rtObserverLayout = {
    markers: () =>
      Object.entries(charts).map(([name, u]) => {
        const dpr = window.uPlot.pxRatio || window.devicePixelRatio || 1;
        return {
          chart: name,
          plotTop: u.bbox.top / dpr,
          plotLeft: u.bbox.left / dpr,
          plotRight: (u.bbox.left + u.bbox.width) / dpr,
          labels: markerBoxes[name] || [],
        };
      }),
    // The charts' cursor: its time, and where each chart draws it against its plot area,
    // with the second its legend shows.
    cursor: () => ({
      t: state.cursorT,
      charts: Object.entries(charts).map(([name, u]) => {
        const dpr = window.uPlot.pxRatio || window.devicePixelRatio || 1;
        const legend = u.root.querySelector(".u-legend .u-series:first-child .u-value");
        return {
          chart: name,
          x: isNum(state.cursorT) ? u.valToPos(state.cursorT, "x", true) / dpr : null,
          plotLeft: u.bbox.left / dpr,
          plotRight: (u.bbox.left + u.bbox.width) / dpr,
          legendTime: legend ? legend.textContent : null,
        };
      }),
    }),
    print: () => ({
      printWidth: $("charts").getBoundingClientRect().width,
      chartWidths: Object.keys(charts)
        .map((name) => $(`chart-${name}`))
        .filter((box) => box.offsetParent !== null)
        .map((box) => box.querySelector("canvas").getBoundingClientRect().width),
    }),
  };

  // A key added to the URL later (#token=... in the same tab): a clean start with it, as the
  // key form does.
  window.addEventListener("hashchange", () => {
    const key = new URLSearchParams(location.hash.replace(/^#/, "")).get("token");
    if (!key) return;
    takeKeyFromFragment();
    location.reload();
  });

  // Who is signed in first (GET /api/v1/me); then the list, or one interview.
  async function start() {
    setStatus("Signing in…", "warn");
    let me;
    try {
      me = await signIn();
    } catch (error) {
      if (error instanceof AuthError) return askForKey(error.message);
      setStatus("Offline, retrying", "bad");
      setTimeout(start, 3000);
      return;
    }
    if (!me) return; // on the way to /login
    if (sessionId) startSession();
    else startList();
  }

  takeKeyFromFragment();
  $("nav-sessions").href = "/observe";
  start();
})();

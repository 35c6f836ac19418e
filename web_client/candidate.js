// Candidate page: consent, device check, the interview one question at a time, live hints,
// and the candidate's summary. Served at /candidate/{session_id}?token=<join_token>.
//
// WebRTC: the server's STUN/TURN servers and ICE transport policy, fetched with fresh TURN
// credentials before each connection, and no trickle ICE: the offer is sent once
// gathering completes. The page opens a `control` data channel before its offer (so SCTP is
// negotiated) and tells the server when each question is shown; the server opens `feedback`
// for live hints. A lost connection is re-offered with the same join token while the server
// keeps the session open (its reconnect grace), with the `resume` secret the first answer
// carried: the server lets only the holder of that secret take over a live session. It is
// kept in this page's memory only (never in storage, cookies or the URL), so a reload
// cannot resume a live interview.
"use strict";

(() => {
  const { $, el, pathSegmentAfter, setStatus } = window.rtPage;

  const sessionId = pathSegmentAfter("candidate");
  const joinToken = new URLSearchParams(location.search).get("token") || "";
  const api = `/api/v1/sessions/${encodeURIComponent(sessionId)}`;

  const OPEN_PROMPT = { text: "Tell us about yourself", seconds: null };
  const REMINDER_AT = 0.8; // share of a question's time after which the reminder shows
  const NEXT_GUARD_MS = 800; // a double click must not skip a question
  const HINT_VISIBLE_MS = 8000;
  const HINTS_SHOWN_MAX = 3; // older hints are hidden (kept in the DOM) beyond this
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const CONNECT_TIMEOUT_MS = 15000;
  const OFFER_TIMEOUT_MS = 10000; // the server answers an offer in well under a second // first connection: answer received, never connected
  const RECONNECT_DELAYS_MS = [1000, 2000, 4000]; // then 4 s between tries
  const RECONNECT_ATTEMPT_WATCHDOG_MS = 6000; // an accepted re-offer that does not connect
  const RECONNECT_GIVE_UP_MS = 20000;
  const RETRY_WAIT_MAX_S = 10; // the retry button's lock after a 503 with Retry-After
  const SUMMARY_POLL_MS = 1000;
  const SUMMARY_TIMEOUT_MS = 30000;
  const MIC_SILENT_WARNING_MS = 5000;
  const MAX_LENGTH_GRACE_MS = 3000; // after the server's maximum length, by this page's clock

  const HINT_FALLBACK_TEXT = {
    pace_fast: "You're speaking quite fast. Slowing down a little helps you come across clearly.",
    pace_slow: "Take your time, but try to keep a steady pace so your answer flows.",
    too_quiet: "We can barely hear you. Try moving closer to your microphone or speaking up.",
    long_silence: "Take a moment if you need it. When you're ready, go ahead with your answer.",
  };

  const MESSAGES = {
    incomplete: "This interview link is incomplete. Use the full link from your invitation.",
    invalid: "This link is not valid (it may have expired).",
    invalidHelp: "Ask the person who invited you for a new link.",
    notFound: "This interview could not be found.",
    notFoundHelp: "Check that you used the full link from your invitation, or ask for a new one.",
    completed: "This interview has already been completed.",
    completedHelp: "Thank you. There is nothing more to do. You can close this page.",
    busy: "The service is busy, try again in a moment.",
    offline: "We couldn't reach the interview service.",
    offlineHelp: "Check your internet connection, then try again.",
    expired: "This interview link has expired.",
    expiredHelp: "Ask the person who invited you for a new link.",
    resumeRequired: "This interview is already under way in another window or tab.",
    resumeRequiredHelp:
      "For your security, an interview that has started can only continue in the window " +
      "where it began. If you closed that window, contact the hiring team.",
    maxLength: "The interview reached its maximum length and has ended.",
    endedByHr: "The hiring team ended the interview.",
  };

  const state = {
    emotion: "on", // from the questions answer: whether facial expression is analysed
    transcription: "on", // from the questions answer: whether speech is transcribed
    expiresAt: null, // unix s when the join link expires (questions answer), if it says
    retentionDays: null, // days the data is kept after the decision (questions answer)
    assessment: null, // what the automated assessment rates: {automated, job: {title, competencies}}
    contact: "", // whom to ask for an alternative selection process or an accommodation
    maxInterviewS: null, // the server's longest interview (s), if it says
    resume: null, // the secret of the first offer's answer; memory only, sent on re-offers
    endReason: null, // "max_length" when the interview ran into the server's limit
    maxLengthTimer: null,
    flow: [], // the questions shown, one at a time ({text, seconds}); OPEN_PROMPT without any
    hasQuestions: false,
    stream: null, // the camera and microphone
    meter: null, // {ctx, analyser, buffer, timer, level, heardAt, startedAt}
    pc: null, // the current RTCPeerConnection
    oldPeers: [], // connections set aside by a reconnect, closed once it is settled
    control: null, // its `control` data channel
    controlQueue: [], // control messages not yet sent (the channel was not open)
    lastQuestionMessage: null, // re-sent on a new connection after a reconnect
    connectedAt: null, // performance.now() of the first connection: the interview's clock
    connectTimer: null,
    current: -1, // index into flow
    questionSpentMs: 0, // time spent on the current question before the last resume
    questionResumedAt: 0, // performance.now() when its countdown last (re)started
    paused: true, // the countdown stops while the connection is lost
    reminded: false,
    tickTimer: null,
    nextGuardTimer: null,
    reconnect: null, // {since, attempt, timer} while a lost connection is being restored
    finished: false,
    switching: false,
  };

  // ---------------------------------------------------------------- small helpers

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // An HTTP failure: the status, the server's error `code` and `detail` and, for 503,
  // Retry-After (seconds).
  class HttpError extends Error {
    constructor(status, detail, retryAfterS, code) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.detail = detail || "";
      this.retryAfterS = retryAfterS;
      this.code = code || "";
    }
  }

  async function httpError(response) {
    let detail = "";
    let code = "";
    try {
      const body = await response.json();
      if (body && (body.detail || body.error)) detail = String(body.detail || body.error);
      if (body && typeof body.error === "string") code = body.error;
    } catch (_) {
      // not JSON
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    const wait = Number.isFinite(retryAfter) ? retryAfter : null;
    return new HttpError(response.status, detail, wait, code);
  }

  async function getJson(url) {
    const response = await fetch(url, {
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    if (!response.ok) throw await httpError(response);
    return response.json();
  }

  async function postJson(url, body, timeoutMs = 0) {
    const controller = timeoutMs > 0 && window.AbortController ? new AbortController() : null;
    const timer = controller ? setTimeout(() => controller.abort(), timeoutMs) : null;
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        signal: controller ? controller.signal : undefined,
      });
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) throw await httpError(response);
    return response.json();
  }

  const withToken = (path) => `${api}/${path}?token=${encodeURIComponent(joinToken)}`;
  const isEndedConflict = (err) => err.status === 409 && /ended|complete/i.test(err.detail);
  // 410: the join link has expired (the server says so on questions, offer and summary).
  const isExpired = (err) => err instanceof HttpError && err.status === 410;
  // 401 resume_required: the session is live and this page does not hold its resume secret.
  const isResumeRequired = (err) =>
    err instanceof HttpError && err.status === 401 && err.code === "resume_required";

  // ---------------------------------------------------------------- steps and messages

  const STEP_SECTIONS = ["consent", "devices", "interview", "finishing", "summary"];
  const STEP_NAV = {
    consent: "consent",
    devices: "devices",
    interview: "interview",
    finishing: "done",
    summary: "done",
  };

  // Shows one step (or none, for a page that can only show an error) and moves focus to its
  // heading so keyboard and screen reader users start there.
  function showStep(name, { focus = true } = {}) {
    for (const id of STEP_SECTIONS) $(id).hidden = id !== name;
    const current = STEP_NAV[name];
    let reached = true;
    document.querySelectorAll(".steps li").forEach((li) => {
      const isCurrent = li.dataset.step === current;
      if (isCurrent) {
        li.setAttribute("aria-current", "step");
        reached = false;
      } else {
        li.removeAttribute("aria-current");
      }
      li.classList.toggle("done", reached && !isCurrent && current !== undefined);
    });
    if (focus && name) {
      const heading = $(name) && $(name).querySelector("h2[tabindex]");
      if (heading) heading.focus({ preventScroll: false });
    }
  }

  let retryHandler = null;
  let retryCountdown = null;

  // The error box: a clear message, how to fix it and, where trying again can help, a button.
  function showError(message, { help = "", retry = null, retryLabel = "Try again", waitS = 0 } = {}) {
    const box = $("error");
    const button = box.querySelector(".problem-retry");
    clearInterval(retryCountdown);
    retryCountdown = null;
    box.querySelector(".problem-message").textContent = message;
    const helpEl = box.querySelector(".problem-help");
    helpEl.textContent = help;
    helpEl.hidden = !help;
    retryHandler = retry;
    box.querySelector(".problem-actions").hidden = !retry;
    button.textContent = retryLabel;
    button.disabled = false;
    if (retry && waitS > 0) {
      // Retry-After: the button unlocks when the server says a slot may be free.
      // Capped: a long lock feels broken, and an early try only gets another 503.
      let left = Math.min(Math.ceil(waitS), RETRY_WAIT_MAX_S);
      button.disabled = true;
      button.textContent = `${retryLabel} (${left})`;
      retryCountdown = setInterval(() => {
        left -= 1;
        if (left > 0) {
          button.textContent = `${retryLabel} (${left})`;
        } else {
          clearInterval(retryCountdown);
          retryCountdown = null;
          button.textContent = retryLabel;
          button.disabled = false;
        }
      }, 1000);
    }
    box.hidden = !message;
  }

  function clearError() {
    showError("");
  }

  $("error")
    .querySelector(".problem-retry")
    .addEventListener("click", () => {
      const handler = retryHandler;
      clearError();
      if (handler) handler();
    });

  // A problem nothing on this page can fix (bad link, finished interview): only the message.
  function showFatal(message, help) {
    stopEverything();
    showStep(null, { focus: false });
    showError(message, { help });
    setStatus("Not connected", "");
  }

  // ---------------------------------------------------------------- link check and consent

  // Checks the link and loads the questions, the emotion and transcription settings and the
  // link's limits. The consent is shown at once with the fullest disclosure (expression and
  // transcript included); it is narrowed here when the server does not analyse expression or
  // transcribe speech. Resolves true when the interview can go ahead.
  async function checkLink() {
    if (!sessionId || !joinToken) {
      showFatal(MESSAGES.incomplete, MESSAGES.invalidHelp);
      return false;
    }
    let questions;
    try {
      questions = await getJson(withToken("questions"));
    } catch (err) {
      if (isExpired(err)) {
        showFatal(MESSAGES.expired, MESSAGES.expiredHelp);
        showMyData(); // the link no longer opens the interview, but the data is still theirs
      } else if (err.status === 401) showFatal(MESSAGES.invalid, MESSAGES.invalidHelp);
      else if (err.status === 404) showFatal(MESSAGES.notFound, MESSAGES.notFoundHelp);
      else if (err instanceof HttpError)
        showError(MESSAGES.busy, { retry: retryLink, waitS: err.retryAfterS || 0 });
      else showError(MESSAGES.offline, { help: MESSAGES.offlineHelp, retry: retryLink });
      return false;
    }
    state.retentionDays = positive(questions.retention_days);
    if (questions.status === "ended") {
      showFatal(MESSAGES.completed, MESSAGES.completedHelp);
      showMyData();
      return false;
    }
    const list = Array.isArray(questions.questions) ? questions.questions : [];
    state.hasQuestions = list.length > 0;
    state.flow = state.hasQuestions
      ? list.map((q) => ({
          text: String(q.text ?? ""),
          seconds: Number.isFinite(q.seconds) && q.seconds > 0 ? q.seconds : null,
        }))
      : [OPEN_PROMPT];
    state.selfIdentification = questions.self_identification || null;
    state.emotion = await emotionSetting(questions);
    state.transcription = questions.transcription === "off" ? "off" : "on";
    state.expiresAt = positive(questions.expires_at);
    state.maxInterviewS = positive(questions.max_interview_s);
    state.assessment = questions.assessment || null;
    state.contact =
      typeof questions.alternative_process_contact === "string"
        ? questions.alternative_process_contact.trim()
        : "";
    renderConsent();
    renderNotice();
    renderOverview();
    clearError(); // a retried check that now succeeds
    return true;
  }

  const positive = (v) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : null);

  // "on" or "off". The questions answer says it; a server that predates that field said it
  // on /healthz. When neither says, the consent keeps its fullest disclosure ("on").
  async function emotionSetting(questions) {
    if (questions.emotion === "on" || questions.emotion === "off") return questions.emotion;
    const health = await getJson("/healthz").catch(() => null);
    return health && health.emotion === "off" ? "off" : "on";
  }

  let linkChecked = null; // the pending or settled checkLink()

  function retryLink() {
    linkChecked = checkLink();
  }

  function totalMinutes() {
    const seconds = state.flow.reduce((sum, q) => sum + (q.seconds || 0), 0);
    return Math.max(1, Math.round(seconds / 60));
  }

  function renderConsent() {
    const video = $("analysed-video");
    video.replaceChildren();
    const label = document.createElement("strong");
    label.textContent = "Video:";
    video.append(
      label,
      state.emotion === "off"
        ? " whether your face is visible to the camera and how well it is lit. Your facial " +
            "expression is not analysed."
        : " whether your face is visible to the camera and how well it is lit, and your " +
            "facial expression."
    );
    const words = $("analysed-words");
    words.replaceChildren();
    const wordsLabel = document.createElement("strong");
    wordsLabel.textContent = "Words:";
    words.append(
      wordsLabel,
      state.transcription === "off"
        ? " what you say is not transcribed."
        : " what you say in your answers is transcribed to text for the hiring team."
    );
    for (const id of ["kept-transcript", "who-transcript", "who-transcript-after"]) {
      $(id).hidden = state.transcription === "off";
    }
    const intro = $("consent-intro");
    if (state.hasQuestions) {
      const n = state.flow.length;
      intro.textContent =
        `This is a video interview with ${n} ${n === 1 ? "question" : "questions"}, ` +
        `about ${totalMinutes()} ${totalMinutes() === 1 ? "minute" : "minutes"} in all. ` +
        "You answer one question at a time, on camera.";
    } else {
      intro.textContent =
        "This is a short video interview: one open question, answered on camera.";
    }
    const limits = [];
    if (state.expiresAt) {
      const until = new Date(state.expiresAt * 1000).toLocaleString(undefined, {
        dateStyle: "long",
        timeStyle: "short",
      });
      limits.push(`This link works until ${until}.`);
    }
    if (state.maxInterviewS) {
      limits.push(
        `An interview ends automatically after ${minutesText(state.maxInterviewS)}.`
      );
    }
    $("consent-limits").textContent = limits.join(" ");
    $("consent-limits").hidden = limits.length === 0;
  }

  // How long the data is kept, as one sentence starting with `subject` ("They are");
  // `before`: said before the interview, when it may yet never start.
  function retentionSentence(subject, before) {
    const days = state.retentionDays;
    const hold = "Only a legal hold (when the law requires keeping them, for example for a " +
      "legal claim) keeps them longer.";
    if (!days) return `${subject} erased after a set time. ${hold}`;
    const n = `${days} ${days === 1 ? "day" : "days"}`;
    const undecided = `${n} after the interview if no decision is recorded`;
    const unused = before ? `, and ${n} after this link expires if you never start` : "";
    return (
      `${subject} erased ${n} after the hiring team's decision about your application ` +
      `(${undecided}${unused}). ${hold}`
    );
  }

  // The notice of the automated employment decision tool (NYC Local Law 144): what it
  // assesses (a job's competencies, from the spoken answers), what it keeps and for how
  // long, and whom to ask for an alternative selection process or an accommodation.
  function renderNotice() {
    $("consent-retention").textContent = retentionSentence("They are", true);
    const job = state.assessment && state.assessment.job;
    const competencies = job && Array.isArray(job.competencies) ? job.competencies : [];
    const list = $("aedt-competencies");
    if (competencies.length > 0) {
      const title = job.title ? ` (${String(job.title)})` : "";
      $("aedt-assesses").textContent =
        "It rates what you say in your spoken answers against the competencies of the " +
        `job${title}:`;
      list.replaceChildren(
        ...competencies.map((c) => {
          const description = c.description ? `: ${String(c.description)}` : "";
          return el("li", {}, el("strong", { text: String(c.name || "") }), description);
        }),
      );
      list.hidden = false;
    } else {
      $("aedt-assesses").textContent =
        "It rates how you come across, from the measurements under \"What is analysed\": " +
        "whether your face is visible, how much, how loudly and how steadily you speak, " +
        (state.emotion === "off" ? "and your pace." : "your pace, and your facial expression.");
      list.replaceChildren();
      list.hidden = true;
    }
    const contact = $("aedt-contact");
    contact.replaceChildren();
    if (state.contact) contact.append("contact ", contactElement(state.contact));
    else contact.textContent = "ask the person who invited you";
  }

  // The configured contact: an email address or a web address as a link, anything else
  // (a phone number, a name) as text.
  function contactElement(value) {
    if (/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value)) {
      return el("a", { href: `mailto:${value}`, text: value });
    }
    if (/^https?:\/\/\S+$/i.test(value)) {
      return el("a", { href: value, text: value, rel: "noopener noreferrer", target: "_blank" });
    }
    return el("strong", { text: value });
  }

  function minutesText(seconds) {
    if (seconds < 120) return `${Math.round(seconds)} seconds`;
    const minutes = Math.round(seconds / 60);
    return `${minutes} minutes`;
  }

  function renderOverview() {
    const n = state.flow.length;
    $("overview").textContent = state.hasQuestions
      ? `${n} ${n === 1 ? "question" : "questions"}, about ${totalMinutes()} ` +
        `${totalMinutes() === 1 ? "minute" : "minutes"} in all. Questions are shown one ` +
        "at a time once you start."
      : "One open question with no time limit: tell us about yourself.";
  }

  // ---------------------------------------------------------------- camera and microphone

  function mediaConstraints(cameraId, micId) {
    const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } };
    // Automatic gain control would flatten the loudness the server measures.
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: false };
    if (cameraId) video.deviceId = { exact: cameraId };
    if (micId) audio.deviceId = { exact: micId };
    return { video, audio };
  }

  // What went wrong with getUserMedia, and how the candidate can fix it.
  function mediaProblem(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return {
        message: "Camera or microphone access is blocked.",
        help:
          "To fix this, open your browser's site settings (the camera or lock icon at the left " +
          "of the address bar), set Camera and Microphone to Allow for this site, then press " +
          "Try again. On a phone, also check the browser is allowed to use the camera in the " +
          "system settings.",
      };
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return {
        message: "No camera or microphone was found.",
        help: "Connect a camera and a microphone (or a headset), then press Try again.",
      };
    }
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
      return {
        message: "Your camera or microphone is being used by another application.",
        help: "Close other apps or tabs that use the camera (such as video calls), then press Try again.",
      };
    }
    return {
      message: "The camera could not be started.",
      help: `Your browser said: ${err && err.message ? err.message : String(err)}. Try again, or use a current version of Chrome, Edge, Firefox or Safari.`,
    };
  }

  async function startCamera() {
    $("agree").disabled = true;
    const linkOk = await linkChecked;
    $("agree").disabled = false;
    if (!linkOk) return; // the failed check already says why (and offers a retry if useful)
    clearError();
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser cannot use the camera on this page.", {
        help: "Open the interview link exactly as you received it (it must start with https://), in a current version of Chrome, Edge, Firefox or Safari.",
      });
      return;
    }
    $("agree").disabled = true;
    setStatus("Starting camera…", "warn");
    try {
      await useStream(await navigator.mediaDevices.getUserMedia(mediaConstraints()));
    } catch (err) {
      $("agree").disabled = false;
      setStatus("Not connected", "");
      const problem = mediaProblem(err);
      showError(problem.message, { help: problem.help, retry: startCamera });
      return;
    }
    showStep("devices");
    await populateDevices();
    setStatus("Camera on", "");
  }

  // Shows `stream` in the previews, feeds the level meter, and enables Start when it is live.
  async function useStream(stream) {
    stopStream();
    state.stream = stream;
    $("preview").srcObject = stream;
    $("self-view").srcObject = stream;
    for (const track of stream.getTracks()) {
      track.addEventListener("ended", () => onTrackEnded(track));
    }
    startMeter(stream);
    updateStartButton();
  }

  function mediaLive() {
    const s = state.stream;
    if (!s) return false;
    const live = (kind) => s.getTracks().some((t) => t.kind === kind && t.readyState === "live");
    return live("video") && live("audio");
  }

  function updateStartButton() {
    $("start").disabled = !mediaLive() || state.switching;
  }

  function onTrackEnded(track) {
    if (!state.stream || !state.stream.getTracks().includes(track)) return; // replaced
    updateStartButton();
    if (state.finished) return;
    const what = track.kind === "video" ? "camera" : "microphone";
    if (state.pc) {
      setNotice(`Your ${what} stopped working. Check that it is still connected.`);
    } else {
      showError(`Your ${what} stopped working.`, {
        help: "Check that it is connected, or choose another one, then press Try again.",
        retry: () => switchDevices(),
      });
    }
  }

  async function populateDevices() {
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch (_) {
      return;
    }
    const settings = (kind) => {
      const track = state.stream && state.stream.getTracks().find((t) => t.kind === kind);
      return track && track.getSettings ? track.getSettings() : {};
    };
    fillSelect($("camera-select"), devices, "videoinput", "Camera", settings("video").deviceId);
    fillSelect($("mic-select"), devices, "audioinput", "Microphone", settings("audio").deviceId);
  }

  function fillSelect(select, devices, kind, noun, currentId) {
    const found = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren();
    found.forEach((device, i) => {
      const option = document.createElement("option");
      option.value = device.deviceId;
      option.textContent = device.label || `${noun} ${i + 1}`;
      select.append(option);
    });
    if (found.length === 0) {
      const option = document.createElement("option");
      option.value = "";
      option.textContent = `No ${noun.toLowerCase()} found`;
      select.append(option);
    }
    if (currentId && found.some((d) => d.deviceId === currentId)) select.value = currentId;
    select.disabled = found.length === 0;
  }

  // Re-acquires the stream with the chosen devices; falls back to the defaults on failure.
  async function switchDevices() {
    if (state.switching || state.pc) return;
    const cameraId = $("camera-select").value;
    const micId = $("mic-select").value;
    state.switching = true;
    updateStartButton();
    $("camera-select").disabled = true;
    $("mic-select").disabled = true;
    clearError();
    // Release the old devices first: some systems cannot open a camera twice.
    stopStream();
    try {
      await useStream(await navigator.mediaDevices.getUserMedia(mediaConstraints(cameraId, micId)));
    } catch (err) {
      const problem = mediaProblem(err);
      try {
        await useStream(await navigator.mediaDevices.getUserMedia(mediaConstraints()));
        showError(`That device could not be used. ${problem.message}`, { help: problem.help });
      } catch (err2) {
        const again = mediaProblem(err2);
        showError(again.message, { help: again.help, retry: () => switchDevices() });
      }
    } finally {
      state.switching = false;
      await populateDevices();
      updateStartButton();
    }
  }

  function stopStream() {
    stopMeter();
    if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
    state.stream = null;
    $("preview").srcObject = null;
    $("self-view").srcObject = null;
  }

  // The microphone level: an AnalyserNode on the mic track, read ten times a second (timers,
  // unlike animation frames, keep running in a background tab).
  function startMeter(stream) {
    stopMeter();
    const track = stream.getAudioTracks()[0];
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!track || !Context) return;
    let ctx;
    try {
      ctx = new Context();
    } catch (_) {
      return;
    }
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    ctx.resume().catch(() => {});
    const meter = {
      ctx,
      analyser,
      buffer: new Float32Array(analyser.fftSize),
      level: 0,
      heardAt: null,
      startedAt: performance.now(),
      timer: null,
    };
    meter.timer = setInterval(() => readMeter(meter), 100);
    state.meter = meter;
    $("mic-feedback").textContent = "Say a few words: the bar should move.";
    $("mic-feedback").classList.remove("warn-text");
  }

  function readMeter(meter) {
    if (meter.ctx.state === "suspended") meter.ctx.resume().catch(() => {});
    meter.analyser.getFloatTimeDomainData(meter.buffer);
    let sum = 0;
    for (const x of meter.buffer) sum += x * x;
    const rms = Math.sqrt(sum / meter.buffer.length);
    const dbfs = rms > 0 ? 20 * Math.log10(rms) : -120;
    const level = Math.min(1, Math.max(0, (dbfs + 60) / 60)); // -60 dBFS .. 0 dBFS
    meter.level = Math.max(level, meter.level * 0.8); // rise at once, fall gently
    const value = Math.round(meter.level * 100) / 100;
    for (const id of ["mic-level", "live-mic-level"]) {
      const el = $(id);
      el.value = value;
      el.textContent = `${Math.round(value * 100)}%`;
    }
    const now = performance.now();
    const feedback = $("mic-feedback");
    if (level > 0.25 && meter.heardAt === null) {
      meter.heardAt = now;
      feedback.textContent = "We can hear you.";
      feedback.classList.remove("warn-text");
    } else if (meter.heardAt === null && now - meter.startedAt > MIC_SILENT_WARNING_MS) {
      if (!feedback.classList.contains("warn-text")) {
        feedback.textContent =
          "We can't hear anything yet. Check that your microphone is not muted, or choose another one.";
        feedback.classList.add("warn-text");
      }
    }
  }

  function stopMeter() {
    const meter = state.meter;
    state.meter = null;
    if (!meter) return;
    clearInterval(meter.timer);
    meter.ctx.close().catch(() => {});
    for (const id of ["mic-level", "live-mic-level"]) $(id).value = 0;
  }

  // ---------------------------------------------------------------- connection

  function iceGatheringComplete(peer, timeoutMs) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        peer.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (peer.iceGatheringState === "complete") finish();
      };
      // Send what has been gathered if gathering stalls; host candidates come first.
      const timer = setTimeout(finish, timeoutMs);
      peer.addEventListener("icegatheringstatechange", check);
    });
  }

  // The server decodes VP8 video and Opus audio: offer those first where the browser lets us.
  function preferCodecs(transceiver, kind) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpSender || !RTCRtpSender.getCapabilities) {
      return;
    }
    const caps = RTCRtpSender.getCapabilities(kind);
    if (!caps) return;
    const wanted = kind === "video" ? /^video\/vp8$/i : /^audio\/opus$/i;
    const first = caps.codecs.filter((c) => wanted.test(c.mimeType));
    if (first.length === 0) return;
    const rest = caps.codecs.filter((c) => !wanted.test(c.mimeType));
    try {
      transceiver.setCodecPreferences([...first, ...rest]);
    } catch (_) {
      // Keep the browser's defaults; the server rejects the offer if it cannot decode it.
    }
  }

  // The STUN/TURN servers and ICE policy for a new connection, fetched fresh each time (TURN
  // credentials expire). When that fetch fails, the last configuration serves: the offer
  // that follows says what is wrong, and a live session may be rejoined even after its
  // link has expired (410 on /questions).
  let lastIceConfiguration = null;
  async function iceConfiguration() {
    try {
      const body = await getJson(withToken("questions"));
      lastIceConfiguration = window.rtPage.peerConfiguration(body);
    } catch (err) {
      if (!lastIceConfiguration) throw err;
    }
    return lastIceConfiguration;
  }

  // A new RTCPeerConnection, offered to the server with the join token. Resolves once the
  // answer is applied; the connection state events do the rest. Throws HttpError or a
  // network TypeError.
  async function openConnection() {
    const peer = new RTCPeerConnection(await iceConfiguration());
    state.pc = peer;
    // Created before the offer, so the offer negotiates SCTP for data channels.
    const control = peer.createDataChannel("control");
    state.control = control;
    control.addEventListener("open", () => flushControl(control));
    control.addEventListener("message", (event) => {
      // The server answers a message it cannot use with {"type": "error"}; nothing to show.
      console.warn("control channel:", event.data);
    });
    peer.addEventListener("datachannel", (event) => {
      if (event.channel.label === "feedback") {
        event.channel.addEventListener("message", (e) => onFeedback(e.data));
      }
    });
    peer.addEventListener("connectionstatechange", () => onConnectionState(peer));
    for (const track of state.stream.getTracks()) {
      const transceiver = peer.addTransceiver(track, {
        direction: "sendonly",
        streams: [state.stream],
      });
      preferCodecs(transceiver, track.kind);
    }
    await peer.setLocalDescription(await peer.createOffer());
    await iceGatheringComplete(peer, ICE_GATHER_TIMEOUT_MS);
    if (state.pc !== peer) throw new Error("superseded");
    const offer = peer.localDescription;
    const body = { sdp: offer.sdp, type: offer.type, token: joinToken };
    if (state.resume) body.resume = state.resume; // a re-offer proves it is this page
    const answer = await postJson(`${api}/offer`, body, OFFER_TIMEOUT_MS);
    if (state.pc !== peer) throw new Error("superseded");
    if (typeof answer.resume === "string" && answer.resume) state.resume = answer.resume;
    await peer.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  }

  function closePeer() {
    const peers = [state.pc, ...state.oldPeers];
    state.pc = null;
    state.control = null;
    state.oldPeers = [];
    for (const peer of peers) {
      if (!peer) continue;
      try {
        peer.close();
      } catch (_) {
        // already closed
      }
    }
  }

  // Sets the current connection aside for a reconnect without closing it: the server reads
  // a close that reaches it as a hangup, which would end the interview. Its media stops, so
  // the server sees the connection go silent and accepts the new offer in its place; it is
  // closed once the new connection is up (or the interview is over).
  function setPeerAside() {
    const peer = state.pc;
    state.pc = null;
    state.control = null;
    if (!peer) return;
    state.oldPeers.push(peer);
    for (const sender of peer.getSenders()) {
      if (sender.track) sender.replaceTrack(null).catch(() => {});
    }
  }

  function closeOldPeers() {
    const peers = state.oldPeers;
    state.oldPeers = [];
    for (const peer of peers) {
      try {
        peer.close();
      } catch (_) {
        // already closed
      }
    }
  }

  async function beginInterview() {
    if (!mediaLive()) {
      showError("Your camera or microphone is not working.", {
        help: "Check that they are connected, choose them above, then press Start again.",
      });
      return;
    }
    clearError();
    $("start").disabled = true;
    $("camera-select").disabled = true;
    $("mic-select").disabled = true;
    state.connectedAt = null;
    state.controlQueue = [];
    state.lastQuestionMessage = null;
    renderConnecting();
    showStep("interview");
    setStatus("Connecting…", "warn");
    try {
      await openConnection();
    } catch (err) {
      firstConnectionFailed(err);
      return;
    }
    clearTimeout(state.connectTimer);
    state.connectTimer = setTimeout(() => {
      if (state.connectedAt === null && state.pc) firstConnectionFailed(new Error("timeout"));
    }, CONNECT_TIMEOUT_MS);
  }

  function firstConnectionFailed(err) {
    clearTimeout(state.connectTimer);
    closePeer();
    if (err && err.message === "superseded") return;
    setStatus("Not connected", "bad");
    if (err instanceof HttpError) {
      if (isExpired(err)) return showFatal(MESSAGES.expired, MESSAGES.expiredHelp);
      if (isResumeRequired(err)) {
        return showFatal(MESSAGES.resumeRequired, MESSAGES.resumeRequiredHelp);
      }
      if (err.status === 401) return showFatal(MESSAGES.invalid, MESSAGES.invalidHelp);
      if (err.status === 404) return showFatal(MESSAGES.notFound, MESSAGES.notFoundHelp);
      if (isEndedConflict(err)) return showFatal(MESSAGES.completed, MESSAGES.completedHelp);
      backToDevices();
      if (err.status === 409) {
        return showError("This interview is already open in another window or tab.", {
          help: "Close the other window, wait a few seconds, then try again.",
          retry: beginInterview,
        });
      }
      if (err.status === 503 || err.status === 429) {
        return showError(MESSAGES.busy, { retry: beginInterview, waitS: err.retryAfterS || 5 });
      }
      if (err.status === 400 || err.status === 415) {
        return showError("Your browser could not set up the video connection.", {
          help: "Try a current version of Chrome, Edge, Firefox or Safari.",
          retry: beginInterview,
        });
      }
      return showError(MESSAGES.busy, { retry: beginInterview });
    }
    backToDevices();
    if (err && err.message === "timeout") {
      return showError("We couldn't connect your camera to the interview.", {
        help:
          "Your network may be blocking video calls (a company VPN or firewall, for example). " +
          "Try another network, then try again.",
        retry: beginInterview,
      });
    }
    showError(MESSAGES.offline, { help: MESSAGES.offlineHelp, retry: beginInterview });
  }

  function backToDevices() {
    showStep("devices", { focus: false });
    const none = (id) => !$(id).value;
    $("camera-select").disabled = none("camera-select");
    $("mic-select").disabled = none("mic-select");
    updateStartButton();
  }

  function onConnectionState(peer) {
    if (peer !== state.pc || state.finished) return;
    const s = peer.connectionState;
    if (s === "connected") {
      setStatus("Connected", "ok");
      if (state.connectedAt === null) {
        clearTimeout(state.connectTimer);
        state.connectedAt = performance.now();
        startQuestions();
      } else if (state.reconnect) {
        reconnected();
      }
    } else if (s === "connecting" || s === "new") {
      if (!state.reconnect) setStatus("Connecting…", "warn");
    } else if (s === "disconnected" || s === "failed") {
      if (state.connectedAt === null) {
        if (s === "failed") firstConnectionFailed(new Error("timeout"));
        return;
      }
      if (!state.reconnect) beginReconnect();
      else if (s === "failed") scheduleReconnect(nextReconnectDelay());
    }
  }

  // ---------------------------------------------------------------- reconnect

  function beginReconnect() {
    const r = { since: performance.now(), attempt: 0, timer: null, giveUp: null };
    state.reconnect = r;
    // However the tries go (a hung request included), stop after the grace period.
    r.giveUp = setTimeout(() => {
      if (state.reconnect === r) reconnectGaveUp("lost");
    }, RECONNECT_GIVE_UP_MS + 2000);
    pauseCountdown();
    $("next").disabled = true;
    setStatus("Reconnecting…", "warn");
    setNotice("The connection was lost. Reconnecting… Your progress is kept.");
    scheduleReconnect(nextReconnectDelay());
  }

  function nextReconnectDelay() {
    const r = state.reconnect;
    const delay = RECONNECT_DELAYS_MS[Math.min(r.attempt, RECONNECT_DELAYS_MS.length - 1)];
    r.attempt += 1;
    return delay;
  }

  function scheduleReconnect(delayMs) {
    const r = state.reconnect;
    if (!r) return;
    clearTimeout(r.timer);
    r.timer = setTimeout(reconnectAttempt, delayMs);
  }

  async function reconnectAttempt() {
    const r = state.reconnect;
    if (!r || state.finished) return;
    // A "disconnected" connection can recover by itself.
    if (state.pc && state.pc.connectionState === "connected") {
      reconnected();
      return;
    }
    if (performance.now() - r.since > RECONNECT_GIVE_UP_MS) {
      reconnectGaveUp("lost");
      return;
    }
    setPeerAside();
    // The new control channel re-states the current question (the server may have a new
    // peer for the session); messages never sent are sent first.
    if (state.controlQueue.length === 0 && state.lastQuestionMessage) {
      state.controlQueue.push(state.lastQuestionMessage);
    }
    try {
      await openConnection();
    } catch (err) {
      if (state.reconnect !== r || (err && err.message === "superseded")) return;
      if (isExpired(err)) return reconnectGaveUp("expired");
      if (isResumeRequired(err)) return reconnectGaveUp("resume_required");
      if (err instanceof HttpError && (err.status === 401 || err.status === 404 || isEndedConflict(err))) {
        reconnectGaveUp("ended"); // the session has ended (or is gone): nothing to rejoin
        return;
      }
      // Anything else, 409 "already live" included (the server has not yet seen the old
      // connection go quiet), is worth another try.
      scheduleReconnect(nextReconnectDelay());
      return;
    }
    // Accepted: the connection state events take it from here; this catches a silent stall.
    if (state.reconnect === r) scheduleReconnect(RECONNECT_ATTEMPT_WATCHDOG_MS);
  }

  function clearReconnect() {
    const r = state.reconnect;
    if (r) {
      clearTimeout(r.timer);
      clearTimeout(r.giveUp);
    }
    state.reconnect = null;
  }

  function reconnected() {
    clearReconnect();
    closeOldPeers();
    state.reconnect = null;
    setNotice("");
    setStatus("Connected", "ok");
    resumeCountdown();
    guardNext();
  }

  // Why the reconnection stopped: "ended" (the server has ended the session), "expired"
  // (the link expired), "resume_required" (the server did not accept this page's secret)
  // or "lost" (no try got through in the grace period).
  function reconnectGaveUp(why) {
    clearReconnect();
    state.finished = true;
    stopQuestions();
    closePeer();
    stopStream();
    setNotice("");
    setStatus("Disconnected", "bad");
    if (why === "ended" && reachedMaxLength()) {
      // The server ended it at its maximum length: not a failure, so the summary follows.
      state.endReason = "max_length";
      showStep("finishing");
      pollSummary();
      return;
    }
    showStep(null, { focus: false });
    const saved =
      "Your answers up to that point were saved. Check your internet connection, and " +
      "contact the hiring team if you would like to continue.";
    if (why === "expired") showError(MESSAGES.expired, { help: saved });
    else if (why === "resume_required") {
      showError(MESSAGES.resumeRequired, { help: MESSAGES.resumeRequiredHelp });
    } else {
      showError(
        why === "ended"
          ? "The connection was lost and the interview has ended."
          : "We lost the connection to the interview and could not reconnect.",
        { help: saved }
      );
    }
    pollSummary({ quietOnTimeout: true });
  }

  // Whether the interview has run (about) as long as the server allows. The page's own
  // clock starts at the first connection, a little after the server's, hence the margin.
  function reachedMaxLength() {
    if (!state.maxInterviewS || state.connectedAt === null) return false;
    return (performance.now() - state.connectedAt) / 1000 >= state.maxInterviewS - 5;
  }

  function setNotice(text) {
    const notice = $("connection-notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  // ---------------------------------------------------------------- data channels

  function sendControl(message) {
    state.controlQueue.push(message);
    flushControl(state.control);
  }

  function flushControl(channel) {
    if (!channel || channel !== state.control || channel.readyState !== "open") return;
    while (state.controlQueue.length > 0) {
      try {
        channel.send(JSON.stringify(state.controlQueue[0]));
      } catch (_) {
        return; // closing: the next connection sends it
      }
      state.controlQueue.shift();
    }
  }

  function onFeedback(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (!message || message.type !== "hint") return;
    const code = typeof message.code === "string" ? message.code : "";
    const text =
      typeof message.text === "string" && message.text ? message.text : HINT_FALLBACK_TEXT[code];
    if (text) addHint(code, text);
  }

  // A gentle note: it shows for a few seconds, then fades and is hidden (kept in the DOM).
  function addHint(code, text) {
    const container = $("hints");
    const empty = container.querySelector(".hints-empty");
    if (empty) empty.hidden = true;
    const hint = document.createElement("div");
    hint.className = "hint";
    hint.dataset.code = code;
    const body = document.createElement("p");
    body.textContent = text;
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "hint-dismiss";
    dismiss.setAttribute("aria-label", "Dismiss tip"); // the × is drawn by CSS
    dismiss.addEventListener("click", () => hideHint(hint));
    hint.append(body, dismiss);
    container.append(hint);
    const visible = [...container.querySelectorAll(".hint:not([hidden])")];
    visible.slice(0, Math.max(0, visible.length - HINTS_SHOWN_MAX)).forEach(hideHint);
    setTimeout(() => fadeHint(hint), HINT_VISIBLE_MS);
  }

  function fadeHint(hint) {
    if (hint.hidden) return;
    hint.classList.add("fading");
    setTimeout(() => hideHint(hint), 600);
  }

  function hideHint(hint) {
    if (hint.contains(document.activeElement)) $("next").focus();
    hint.hidden = true;
    hint.classList.remove("fading");
    const container = $("hints");
    const empty = container.querySelector(".hints-empty");
    if (empty) empty.hidden = Boolean(container.querySelector(".hint:not([hidden])"));
  }

  // ---------------------------------------------------------------- questions

  function renderConnecting() {
    $("question-index").textContent = "Connecting…";
    $("question-text").textContent = "Connecting to the interview…";
    $("timer").hidden = true;
    $("no-limit").hidden = true;
    $("reminder").hidden = true;
    $("next").disabled = true;
    $("next").textContent = "Next question";
    setNotice("");
    const hints = $("hints");
    hints.querySelectorAll(".hint").forEach((h) => h.remove());
    const empty = hints.querySelector(".hints-empty");
    if (empty) empty.hidden = false;
  }

  const secondsSinceConnected = () =>
    Math.round((performance.now() - state.connectedAt) / 10) / 100;

  function startQuestions() {
    clearInterval(state.tickTimer);
    state.tickTimer = setInterval(tick, 250);
    armMaxLength();
    showQuestion(0);
  }

  // At the server's maximum length the server ends the interview (end_reason max_length),
  // and the page learns it when its re-offer is refused (see reconnectGaveUp). Should the
  // connection outlive the limit, the page finishes by itself a moment later
  // (MAX_LENGTH_GRACE_MS: the server's end comes first and keeps its reason). A minute
  // before the limit, a notice says it is coming.
  function armMaxLength() {
    clearTimeout(state.maxLengthTimer);
    const limitS = state.maxInterviewS;
    if (!limitS) return;
    const warnMs = (limitS - 60) * 1000;
    if (warnMs > 0) {
      setTimeout(() => {
        if (!state.finished && !state.reconnect) {
          setNotice("The interview ends automatically in one minute (its maximum length).");
        }
      }, warnMs);
    }
    state.maxLengthTimer = setTimeout(() => {
      if (state.finished) return;
      state.endReason = "max_length";
      finish();
    }, limitS * 1000 + MAX_LENGTH_GRACE_MS);
  }

  function stopQuestions() {
    clearInterval(state.tickTimer);
    state.tickTimer = null;
    clearTimeout(state.maxLengthTimer);
    clearTimeout(state.nextGuardTimer);
    state.paused = true;
    $("next").disabled = true;
  }

  function showQuestion(index) {
    const question = state.flow[index];
    const last = index === state.flow.length - 1;
    state.current = index;
    state.questionSpentMs = 0;
    state.questionResumedAt = performance.now();
    state.paused = false;
    state.reminded = false;

    $("question-index").textContent = `Question ${index + 1} of ${state.flow.length}`;
    $("question-text").textContent = question.text;
    $("next").textContent = last ? "Finish" : "Next question";
    $("reminder").hidden = true;
    $("timer").hidden = !question.seconds;
    $("no-limit").hidden = Boolean(question.seconds);
    $("timer").classList.remove("low");
    if (question.seconds) {
      $("countdown").textContent = String(question.seconds);
      $("timer-bar").style.width = "100%";
    }
    guardNext();

    const message = { type: "question", index, at: secondsSinceConnected() };
    state.lastQuestionMessage = message;
    sendControl(message);
  }

  // The Next button waits a moment after each question appears: a double click must not
  // skip the question that just appeared.
  function guardNext() {
    const next = $("next");
    const hadFocus = document.activeElement === next;
    next.disabled = true;
    clearTimeout(state.nextGuardTimer);
    state.nextGuardTimer = setTimeout(() => {
      if (state.finished || state.reconnect || state.current < 0) return;
      next.disabled = false;
      if (hadFocus) next.focus();
    }, NEXT_GUARD_MS);
  }

  function questionElapsedMs() {
    return state.questionSpentMs + (state.paused ? 0 : performance.now() - state.questionResumedAt);
  }

  function pauseCountdown() {
    if (state.paused) return;
    state.questionSpentMs = questionElapsedMs();
    state.paused = true;
  }

  function resumeCountdown() {
    if (!state.paused || state.current < 0 || state.finished) return;
    state.questionResumedAt = performance.now();
    state.paused = false;
  }

  function tick() {
    if (state.paused || state.current < 0 || state.finished) return;
    const question = state.flow[state.current];
    if (!question.seconds) return;
    const totalMs = question.seconds * 1000;
    const elapsed = questionElapsedMs();
    const left = Math.max(0, Math.ceil((totalMs - elapsed) / 1000));
    $("countdown").textContent = String(left);
    $("timer-bar").style.width = `${Math.max(0, 100 * (1 - elapsed / totalMs))}%`;
    if (!state.reminded && elapsed >= REMINDER_AT * totalMs) {
      state.reminded = true;
      $("reminder").hidden = false;
      $("timer").classList.add("low");
    }
    if (elapsed >= totalMs) advance();
  }

  function advance() {
    if (state.finished || state.current < 0) return;
    if (state.current >= state.flow.length - 1) finish();
    else showQuestion(state.current + 1);
  }

  // ---------------------------------------------------------------- finishing and summary

  async function finish() {
    if (state.finished) return;
    state.finished = true;
    clearReconnect();
    stopQuestions();
    setNotice("");
    clearError();
    showStep("finishing");
    setStatus("Finishing…", "warn");
    let endFailed = false;
    try {
      await postJson(`${api}/end`, { token: joinToken });
    } catch (err) {
      // 409: it has already ended (nothing to do). Otherwise the server ends the session
      // itself when the connection closes.
      endFailed = !(err instanceof HttpError && err.status === 409);
    }
    closePeer();
    stopStream();
    setStatus("Interview ended", "");
    await pollSummary({ endFailed });
  }

  // Polls the summary until the session has ended and its summary exists (about 30 s at
  // most), then shows it. Only strengths and things to work on: never a score.
  async function pollSummary({ endFailed = false, quietOnTimeout = false } = {}) {
    const deadline = performance.now() + SUMMARY_TIMEOUT_MS;
    while (performance.now() < deadline) {
      try {
        const summary = await getJson(withToken("summary"));
        if (summary && summary.status === "ended") {
          const reason = summary.end_reason;
          if (reason === "max_length" || reason === "ended_by_hr") state.endReason = reason;
          renderSummary(summary);
          return;
        }
      } catch (err) {
        if (err instanceof HttpError && (err.status === 401 || err.status === 410)) break;
      }
      await sleep(SUMMARY_POLL_MS);
    }
    if (quietOnTimeout) return; // the error box already says what happened
    renderSummary(null, endFailed);
  }

  function fillList(list, items) {
    list.replaceChildren();
    for (const item of items) {
      const li = document.createElement("li");
      li.textContent = String(item);
      list.append(li);
    }
    list.hidden = items.length === 0;
    list.parentElement.querySelector(".summary-empty").hidden = items.length > 0;
  }

  // For an interview for a job: per question, what the answer could add. Never a score.
  function renderAnswerFeedback(answers) {
    const items = answers.filter((a) => Array.isArray(a.feedback) && a.feedback.length);
    $("answer-feedback-list").replaceChildren(
      ...items.map((a) => {
        const li = document.createElement("li");
        const question = document.createElement("p");
        question.className = "answer-question";
        question.textContent = String(a.text || "");
        const tips = document.createElement("ul");
        for (const tip of a.feedback) {
          const tipItem = document.createElement("li");
          tipItem.textContent = String(tip);
          tips.append(tipItem);
        }
        li.append(question, tips);
        return li;
      }),
    );
    $("answer-feedback").hidden = items.length === 0;
  }

  function renderSummary(summary, endFailed = false) {
    const strengths = summary && Array.isArray(summary.strengths) ? summary.strengths : [];
    const improvements =
      summary && Array.isArray(summary.improvements) ? summary.improvements : [];
    fillList($("strengths"), strengths);
    fillList($("improvements"), improvements);
    renderAnswerFeedback(summary && Array.isArray(summary.answers) ? summary.answers : []);
    $("summary-body").hidden = !summary;
    const ended =
      state.endReason === "max_length"
        ? `${MESSAGES.maxLength} `
        : state.endReason === "ended_by_hr"
          ? `${MESSAGES.endedByHr} `
          : "";
    if (summary) {
      $("summary-intro").textContent = `${ended}Here is a short summary of how it went.`;
    } else if (ended) {
      $("summary-intro").textContent =
        `${ended}Your answers were received; the hiring team will receive your results.`;
    } else if (endFailed) {
      $("summary-intro").textContent =
        "Your answers were received, but we could not confirm the end of the interview or " +
        "prepare your summary. The hiring team will receive your results.";
    } else {
      $("summary-intro").textContent =
        "Your answers were received. Your summary is not ready yet; the hiring team will " +
        "receive your results.";
    }
    if (summary) offerSelfIdentification();
    $("summary").hidden = false;
    $("finishing").hidden = true;
    showStep("summary");
    showMyData();
  }

  // ---------------------------------------------------------------- the candidate's data

  // Download (GET .../export?token=, a JSON attachment) and erase (POST
  // .../erasure-request): both work with the join token even once the link has expired.
  function showMyData() {
    $("my-data-retention").textContent = retentionSentence("Your interview data and results are", false);
    $("download-data").href = withToken("export");
    $("my-data").hidden = false;
  }

  function askToErase(open) {
    $("erase-confirm").hidden = !open;
    $("erase-data").disabled = open;
    (open ? $("erase-confirm-yes") : $("erase-data")).focus();
  }

  async function eraseMyData() {
    const status = $("my-data-status");
    $("erase-confirm-yes").disabled = true;
    status.textContent = "Erasing…";
    let result;
    try {
      result = await postJson(`${api}/erasure-request`, { token: joinToken });
    } catch (err) {
      status.textContent =
        err instanceof HttpError && err.status === 404
          ? "There is no interview data to erase any more."
          : "Your data could not be erased just now. Please try again.";
      $("erase-confirm-yes").disabled = false;
      return;
    }
    $("erase-confirm").hidden = true;
    if (result && result.status === "erased") {
      // Nothing is left to download, and the answers on this page are gone from the server.
      $("my-data-actions").hidden = true;
      $("self-id").hidden = true;
      status.textContent = "Your interview data has been erased.";
    } else {
      $("erase-data").hidden = true;
      status.textContent =
        (result && result.detail) ||
        "Your request is recorded. Your data will be erased as soon as the law allows.";
    }
  }

  $("erase-data").addEventListener("click", () => askToErase(true));
  $("erase-confirm-no").addEventListener("click", () => askToErase(false));
  $("erase-confirm-yes").addEventListener("click", eraseMyData);

  // The voluntary self-identification form, once the interview has ended (never before):
  // its answers go to the bias audit only. Leaving a question on "I prefer not to say" sends
  // nothing for it.
  function offerSelfIdentification() {
    const categories = state.selfIdentification;
    if (!categories || !Array.isArray(categories.sex) || !Array.isArray(categories.race)) return;
    const fill = (select, options) => {
      select.replaceChildren(
        el("option", { value: categories.decline, text: "I prefer not to say" }),
        ...options.map((option) => el("option", { value: option, text: option })),
      );
    };
    fill($("self-id-sex"), categories.sex);
    fill($("self-id-race"), categories.race);
    $("self-id").hidden = false;
  }

  $("self-id").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("self-id-send").disabled = true;
    try {
      await postJson(`${api}/self-identification`, {
        token: joinToken,
        sex: $("self-id-sex").value,
        race: $("self-id-race").value,
      });
      $("self-id-status").textContent = "Thank you. Your answers were saved.";
    } catch (err) {
      $("self-id-status").textContent = "Your answers could not be saved. You can try again.";
      $("self-id-send").disabled = false;
    }
  });

  // ---------------------------------------------------------------- teardown

  function stopEverything() {
    state.finished = true;
    clearReconnect();
    clearTimeout(state.connectTimer);
    stopQuestions();
    closePeer();
    stopStream();
  }

  // Closing the tab mid-interview: tell the server, best effort, so the session finishes now.
  window.addEventListener("pagehide", () => {
    if (state.connectedAt === null || state.finished) return;
    const body = new Blob([JSON.stringify({ token: joinToken })], { type: "application/json" });
    navigator.sendBeacon(`${api}/end`, body);
  });

  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", () => {
      if (state.stream && !state.pc) populateDevices();
    });
  }

  $("agree").addEventListener("click", startCamera);
  $("start").addEventListener("click", beginInterview);
  $("next").addEventListener("click", () => {
    if (!$("next").disabled) advance();
  });
  $("camera-select").addEventListener("change", switchDevices);
  $("mic-select").addEventListener("change", switchDevices);

  showStep("consent", { focus: false });
  linkChecked = checkLink();
})();

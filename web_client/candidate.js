// Candidate page: consent, camera preview, and one WebRTC connection to the server.
// Served at /candidate/{session_id}?token=<join_token>. No STUN/TURN: iceServers is empty,
// and the offer is sent only once ICE gathering is complete (no trickle ICE).
"use strict";

(() => {
  const { $, pathSegmentAfter, setStatus, showError } = window.rtPage;

  const sessionId = pathSegmentAfter("candidate");
  const joinToken = new URLSearchParams(location.search).get("token") || "";
  const api = `/api/v1/sessions/${encodeURIComponent(sessionId)}`;

  let stream = null; // MediaStream from getUserMedia
  let pc = null; // RTCPeerConnection while connecting or connected
  let connectedAt = null; // performance.now() when the call connected, for the questions
  let questionTimer = null;
  let questions = [];

  // The server answers errors as JSON {"error", "detail"}; fall back to the status line.
  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && (body.detail || body.error)) return String(body.detail || body.error);
    } catch (_) {
      // not JSON
    }
    return `Request failed (HTTP ${response.status} ${response.statusText})`.trim();
  }

  // ---------------------------------------------------------------- questions

  async function loadQuestions() {
    try {
      const url = `${api}/questions?token=${encodeURIComponent(joinToken)}`;
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return; // 404: this session has no questions
      const body = await response.json();
      questions = Array.isArray(body.questions) ? body.questions : [];
    } catch (_) {
      questions = [];
    }
    renderQuestions();
  }

  function renderQuestions() {
    const list = $("question-list");
    list.replaceChildren();
    for (const q of questions) {
      const li = document.createElement("li");
      li.append(String(q.text ?? ""));
      if (Number.isFinite(q.seconds)) {
        const secs = document.createElement("span");
        secs.className = "secs";
        secs.textContent = `about ${Math.round(q.seconds)} s`;
        li.append(secs);
      }
      list.append(li);
    }
    $("questions").hidden = questions.length === 0;
  }

  // Highlights the question whose time slot the call is in, counting from connection.
  function tickQuestions() {
    if (connectedAt === null || questions.length === 0) return;
    const elapsed = (performance.now() - connectedAt) / 1000;
    let end = 0;
    let current = questions.length - 1;
    for (let i = 0; i < questions.length; i++) {
      end += Number(questions[i].seconds) || 0;
      if (elapsed < end) {
        current = i;
        break;
      }
    }
    $("question-list")
      .querySelectorAll("li")
      .forEach((li, i) => li.classList.toggle("current", i === current));
  }

  // ---------------------------------------------------------------- camera

  async function startCamera() {
    showError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser cannot use the camera here. Open the link over HTTPS.");
      return;
    }
    $("agree").disabled = true;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } },
        // Automatic gain control would flatten the loudness the server measures.
        audio: { echoCancellation: true, autoGainControl: false },
      });
    } catch (err) {
      $("agree").disabled = false;
      const name = err && err.name;
      if (name === "NotAllowedError") {
        showError("Camera and microphone access was denied. Allow it and try again.");
      } else if (name === "NotFoundError") {
        showError("No camera or microphone was found.");
      } else {
        showError(`Could not start the camera: ${err && err.message ? err.message : err}`);
      }
      return;
    }
    $("preview").srcObject = stream;
    $("consent").hidden = true;
    $("call").hidden = false;
    $("connect").disabled = false;
    setStatus("Camera on", "");
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

  // The server decodes VP8; offer it first (with its retransmission codec) where supported.
  function preferVp8(transceiver) {
    if (!transceiver.setCodecPreferences || !RTCRtpSender.getCapabilities) return;
    const caps = RTCRtpSender.getCapabilities("video");
    if (!caps) return;
    const vp8 = caps.codecs.filter((c) => /^video\/vp8$/i.test(c.mimeType));
    const rtx = caps.codecs.filter((c) => /^video\/rtx$/i.test(c.mimeType));
    if (vp8.length === 0) return;
    try {
      transceiver.setCodecPreferences([...vp8, ...rtx]);
    } catch (_) {
      // Keep the browser's defaults; the server will reject the offer if it cannot decode.
    }
  }

  function onConnectionState() {
    if (!pc) return;
    const state = pc.connectionState;
    if (state === "connected") {
      setStatus("Connected", "ok");
      $("hangup").disabled = false;
      if (connectedAt === null) {
        connectedAt = performance.now();
        questionTimer = setInterval(tickQuestions, 500);
        tickQuestions();
      }
    } else if (state === "connecting" || state === "new") {
      setStatus("Connecting…", "warn");
    } else if (state === "disconnected") {
      setStatus("Connection interrupted…", "warn");
    } else if (state === "failed") {
      setStatus("Connection failed", "bad");
      showError("The connection to the interview server failed. Try connecting again.");
      closePeer();
      $("connect").disabled = false;
    }
  }

  async function connect() {
    if (!stream) return;
    showError("");
    $("connect").disabled = true;
    setStatus("Connecting…", "warn");
    pc = new RTCPeerConnection({ iceServers: [] });
    pc.addEventListener("connectionstatechange", onConnectionState);
    for (const track of stream.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      if (track.kind === "video") preferVp8(transceiver);
    }
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, 5000);
      const offer = pc.localDescription;
      const response = await fetch(`${api}/offer`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ sdp: offer.sdp, type: offer.type, token: joinToken }),
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      const answer = await response.json();
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      $("hangup").disabled = false;
    } catch (err) {
      closePeer();
      setStatus("Not connected", "bad");
      showError(err && err.message ? err.message : String(err));
      $("connect").disabled = false;
    }
  }

  function closePeer() {
    if (pc) {
      pc.removeEventListener("connectionstatechange", onConnectionState);
      pc.close();
      pc = null;
    }
  }

  async function hangUp() {
    $("hangup").disabled = true;
    $("connect").disabled = true;
    let failure = "";
    try {
      const response = await fetch(`${api}/end`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ token: joinToken }),
      });
      if (!response.ok) failure = await errorMessage(response);
    } catch (err) {
      failure = `Could not reach the server to end the interview: ${err.message || err}`;
    }
    closePeer();
    if (questionTimer !== null) clearInterval(questionTimer);
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    $("preview").srcObject = null;
    setStatus("Interview ended", "");
    showError(failure);
  }

  // Closing the tab mid-call: tell the server, best effort, so the session can finish.
  window.addEventListener("pagehide", () => {
    if (!pc) return;
    const body = new Blob([JSON.stringify({ token: joinToken })], { type: "application/json" });
    navigator.sendBeacon(`${api}/end`, body);
  });

  $("agree").addEventListener("click", startCamera);
  $("connect").addEventListener("click", connect);
  $("hangup").addEventListener("click", hangUp);

  if (!sessionId || !joinToken) {
    $("agree").disabled = true;
    showError("This interview link is incomplete. Use the full link you were sent.");
  } else {
    loadQuestions();
  }
})();

// Helpers shared by the candidate and observer pages: element lookup, the page's session id,
// the status pill, the error box and the ICE configuration. Loaded before each page's script.
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

  // The RTCPeerConnection configuration from the server's answer to /questions (candidate)
  // or /api/v1/ice-servers (observer): its STUN/TURN servers, TURN ones with a credential
  // that expires, so each connection fetches a fresh one, and the ICE transport policy
  // ("relay": all media through TURN). Without servers, only host candidates are used.
  function peerConfiguration(body) {
    const servers = body && Array.isArray(body.ice_servers) ? body.ice_servers : [];
    return {
      iceServers: servers,
      iceTransportPolicy: body && body.ice_transport_policy === "relay" ? "relay" : "all",
    };
  }

  return { $, pathSegmentAfter, setStatus, showError, peerConfiguration };
})();

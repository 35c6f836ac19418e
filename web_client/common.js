// Helpers shared by the pages: element lookup, the page's session id, the status pill, the
// error box, the ICE configuration, and the HR pages' API key and REST calls. Loaded before
// each page's script.
"use strict";

window.rtPage = (() => {
  const $ = (id) => document.getElementById(id);

  // The path segment after `name`: /candidate/{id} or /observe/{id} gives the session id.
  function pathSegmentAfter(name) {
    const parts = location.pathname.split("/").filter(Boolean);
    const i = parts.indexOf(name);
    return i >= 0 && i + 1 < parts.length ? decodeURIComponent(parts[i + 1]) : "";
  }

  // An element with attributes ("class", "text" for textContent, any other as an attribute;
  // null, undefined and false left out) and children. Text only ever goes in as textContent.
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

  // ---------------------------------------------------------------- the HR key (HR pages)

  // The HR API key is kept in sessionStorage only (this tab), under one name for every HR
  // page (the observer's and the jobs page), so moving between them keeps it. It arrives in
  // the URL fragment (#token=...) or through a page's key form.
  const KEY_STORAGE = "rtserver.observer.apiKey";

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
  const storeKey = (key) => sessionStorage.setItem(KEY_STORAGE, key);
  const forgetKey = () => sessionStorage.removeItem(KEY_STORAGE);

  class AuthError extends Error {}

  // A REST call with the key; returns {status, ok, body, headers}; throws AuthError on 401.
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
    } else if (type.includes("text/html")) {
      body = await response.text(); // a report fragment, escaped by the server
    }
    if (response.status === 401) throw new AuthError("The API key was not accepted.");
    return { status: response.status, ok: response.ok, body, headers: response.headers };
  }

  // A JSON body for api(): {method, headers, body}.
  const jsonRequest = (method, value) => ({
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(value),
  });

  // What the server said went wrong ({"error", "detail"}), else the HTTP status.
  const errorDetail = (result) =>
    (result.body && (result.body.detail || result.body.error)) || `HTTP ${result.status}`;

  return {
    $,
    el,
    pathSegmentAfter,
    setStatus,
    showError,
    peerConfiguration,
    takeKeyFromFragment,
    apiKey,
    storeKey,
    forgetKey,
    AuthError,
    api,
    jsonRequest,
    errorDetail,
  };
})();

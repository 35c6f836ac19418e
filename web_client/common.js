// Helpers shared by the pages: element lookup, the page's session id, the status pill, the
// error box, the ICE configuration, and for the HR pages who is signed in (an API key or the
// browser login) and the REST calls made as them. Loaded before each page's script.
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

  // ---------------------------------------------------------------- who is signed in (HR pages)

  // An HR page acts in one of two ways:
  // - with an API key kept in this tab (integrators, the bootstrap key), sent as
  //   `Authorization: Bearer`; it arrives in the URL fragment (#token=...) or a key form;
  // - without one, with the browser login made at /login: its cookie is HttpOnly (the page
  //   never sees it) and goes with every same-origin request, and every state-changing
  //   call carries the login's CSRF token (from GET /api/v1/me) in X-CSRF-Token.
  // A key, when there is one, decides alone, as it does on the server.

  // The key is kept in sessionStorage only (this tab), under one name for every HR page (the
  // observer's and the jobs page), so moving between them keeps it.
  const KEY_STORAGE = "rtserver.observer.apiKey";
  const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

  // Reads #token=... once and removes it from the address bar (history, screenshots).
  function takeKeyFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = params.get("token");
    if (key) {
      sessionStorage.setItem(KEY_STORAGE, key);
      history.replaceState(null, "", location.pathname + location.search);
    }
    return Boolean(key);
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORAGE) || "";
  const storeKey = (key) => sessionStorage.setItem(KEY_STORAGE, key);
  const forgetKey = () => sessionStorage.removeItem(KEY_STORAGE);

  // A refused credential (HTTP 401): `withKey` when it was this tab's API key (the page
  // shows its key form), else the browser login has ended (the page goes to /login).
  class AuthError extends Error {
    constructor(message, withKey) {
      super(message);
      this.withKey = Boolean(withKey);
    }
  }

  const signedIn = { me: null, csrfToken: "" }; // GET /api/v1/me's answer, and its token

  async function readBody(response) {
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      try {
        return await response.json();
      } catch (_) {
        return null;
      }
    }
    if (type.includes("text/html")) return response.text(); // a report fragment, escaped
    return null;
  }

  // A REST call as whoever this page acts as; returns {status, ok, body, headers}; throws
  // AuthError on 401.
  async function api(path, options = {}, retried = false) {
    const key = apiKey();
    const method = String(options.method || "GET").toUpperCase();
    const headers = { ...(options.headers || {}) };
    if (key) headers.Authorization = `Bearer ${key}`;
    else if (!SAFE_METHODS.has(method) && signedIn.csrfToken) {
      headers["X-CSRF-Token"] = signedIn.csrfToken;
    }
    const response = await fetch(path, {
      cache: "no-store",
      credentials: "same-origin",
      ...options,
      headers,
    });
    const body = await readBody(response);
    if (response.status === 401) {
      throw new AuthError(
        key ? "The API key was not accepted." : "You are signed out. Sign in again.",
        Boolean(key),
      );
    }
    // A login made since in another tab replaced the cookie, and with it the CSRF token:
    // fetch the current one and try once more.
    if (
      response.status === 403 &&
      !key &&
      !retried &&
      body &&
      body.error === "csrf_failed" &&
      (await whoAmI())
    ) {
      return api(path, options, true);
    }
    return { status: response.status, ok: response.ok, body, headers: response.headers };
  }

  // GET /api/v1/me: who this page acts as (kept in signedIn), or throws AuthError.
  async function whoAmI() {
    const { ok, status, body } = await api("/api/v1/me");
    if (!ok || !body) throw new Error(`HTTP ${status}`);
    signedIn.me = body;
    signedIn.csrfToken = body.csrf_token || "";
    return body;
  }

  // Whether `next` (a ?next= value) is a path on this site: "/" and not "//" or "/\", which
  // browsers read as another host. Anything else sends nobody anywhere else.
  function isLocalPath(next) {
    if (typeof next !== "string" || !next.startsWith("/") || next.startsWith("//")) return false;
    if (/[\\\u0000-\u001f\u007f]/.test(next)) return false;
    try {
      return new URL(next, location.origin).origin === location.origin;
    } catch (_) {
      return false;
    }
  }

  // To the login page, and back to this page once signed in.
  function goToLogin() {
    const here = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(here)}`);
  }

  // The header's "who is signed in": the name, role and org unit (the unit's name when the
  // units list has it), and Sign out for a browser login or Forget key for a key.
  function showSignedIn(me) {
    const box = $("whoami");
    if (!box) return;
    const user = me.user || {};
    const name = user.name || me.name || "";
    const unitText = el("span", { class: "who-unit", text: me.unit });
    box.replaceChildren(
      el("span", { class: "visually-hidden", text: "Signed in as " }),
      el("span", { class: "who-name", text: name }),
      el("span", { class: "visually-hidden", text: ", " }),
      el("span", { class: "who-role", text: me.role }),
      el("span", { class: "visually-hidden", text: ", unit " }),
      unitText,
    );
    box.dataset.role = me.role;
    box.dataset.unit = me.unit;
    box.dataset.via = me.via;
    box.title = `Signed in as ${name} (${me.role}, unit ${me.unit})`;
    box.hidden = false;
    const cookie = me.via === "cookie";
    if ($("sign-out")) $("sign-out").hidden = !cookie;
    if ($("forget-key")) $("forget-key").hidden = cookie;
    api("/api/v1/units")
      .then(({ ok, body }) => {
        const units = ok && body && Array.isArray(body.units) ? body.units : [];
        const unit = units.find((u) => u.id === me.unit);
        if (unit && unit.name) unitText.textContent = unit.name;
      })
      .catch(() => {});
  }

  // Starts an HR page: resolves to who is signed in (shown in the header), or to null when
  // the page is on its way to /login (nobody signed in, or a login that must still enrol
  // its second factor there). Throws AuthError for a refused key, an Error when offline.
  async function signIn() {
    let me;
    try {
      me = await whoAmI();
    } catch (error) {
      if (error instanceof AuthError && !error.withKey) {
        goToLogin();
        return null;
      }
      throw error;
    }
    if (me.enrol_totp) {
      goToLogin();
      return null;
    }
    showSignedIn(me);
    return me;
  }

  // Ends the browser login (POST /api/v1/logout, with the CSRF token), then opens the login
  // page. Resolves to false, staying here, when the server could not be reached or refused.
  async function signOut() {
    let result;
    try {
      result = await api("/api/v1/logout", { method: "POST" });
    } catch (error) {
      if (!(error instanceof AuthError)) return false;
      result = { ok: true }; // already signed out
    }
    if (!result.ok) return false;
    signedIn.me = null;
    signedIn.csrfToken = "";
    location.assign("/login");
    return true;
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
    signedIn,
    whoAmI,
    isLocalPath,
    goToLogin,
    signIn,
    signOut,
    jsonRequest,
    errorDetail,
  };
})();

// HR's login page (/login?next=...): the username and password, then the authenticator's
// code (or a recovery code) when the account has one, or, for an account that must have a
// second factor and has none yet, enrolling one: the QR code and the secret to type, a
// code to confirm, and the ten recovery codes shown once. Then on to `next`.
//
// The login's cookie is HttpOnly (this page never sees it); the CSRF token that comes with
// the login goes in X-CSRF-Token on the enrolment's POSTs. The password stays in this
// page's memory only between the steps of one login.
//
// `next` is followed only when it is a path on this site (common.js isLocalPath), so a link
// to this page cannot send anyone elsewhere after they sign in.
"use strict";

(() => {
  const { $, el, takeKeyFromFragment, storeKey, forgetKey, isLocalPath } = window.rtPage;
  const DEFAULT_NEXT = "/observe";
  const STEPS = ["login", "code-step", "recovery-step", "enrol-step", "codes-step", "recovered-step"];
  // The elements a QR code from the server may hold; anything else is dropped.
  const SVG_ELEMENTS = new Set(["svg", "g", "path", "rect", "title", "desc"]);

  const next = (() => {
    const asked = new URLSearchParams(location.search).get("next");
    if (!isLocalPath(asked)) return DEFAULT_NEXT;
    // Not back to this page: that would only ask again.
    return new URL(asked, location.origin).pathname === "/login" ? DEFAULT_NEXT : asked;
  })();

  // The login under way: what was typed (kept for the code step) and the login's CSRF token.
  const login = { username: "", password: "", csrfToken: "" };

  // ================================================================ steps and messages

  function show(step) {
    for (const id of STEPS) $(id).hidden = id !== step;
    document.body.dataset.step = step;
    $("login-title").textContent =
      step === "enrol-step" || step === "codes-step" ? "Two-factor login" : "Sign in";
    $("key-option").hidden = step !== "login";
    $("start-over-line").hidden = !["code-step", "recovery-step"].includes(step);
    const first = $(step).querySelector("input, button.primary");
    if (first) first.focus();
  }

  function say(message) {
    $("message").textContent = message;
    $("message").hidden = !message;
  }

  function busy(form, on) {
    for (const button of $(form).querySelectorAll("button")) button.disabled = on;
  }

  function forgetPassword() {
    login.password = "";
    $("password").value = "";
  }

  function startOver(message) {
    forgetPassword();
    login.csrfToken = "";
    $("code").value = "";
    $("recovery-code").value = "";
    show("login");
    say(message || "");
  }

  function goOn() {
    location.replace(next);
  }

  // ================================================================ talking to the server

  async function post(path, body, csrfToken) {
    const headers = { "Content-Type": "application/json" };
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        cache: "no-store",
        credentials: "same-origin",
        headers,
        body: JSON.stringify(body),
      });
    } catch (_) {
      return { status: 0, ok: false, body: null, headers: new Headers() };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { status: response.status, ok: response.ok, body: data, headers: response.headers };
  }

  const detail = (result) => (result.body && (result.body.detail || result.body.error)) || "";

  // What went wrong with a refused login, in words; `step` is the step that sent it.
  function refusal(result, step) {
    if (result.status === 0) return "The server could not be reached. Try again.";
    const error = result.body && result.body.error;
    if (result.status === 429) {
      const seconds = Number(result.headers.get("retry-after")) || 0;
      if (error === "locked_out") {
        const minutes = Math.max(1, Math.ceil(seconds / 60));
        return (
          `Too many failed sign-ins: this account is locked for ${minutes} more ` +
          `minute${minutes === 1 ? "" : "s"}. Try again later, or ask an admin.`
        );
      }
      return `Too many attempts. Wait ${seconds || "a few"} seconds and try again.`;
    }
    if (result.status === 401) {
      if (/username or password/.test(detail(result))) return "Wrong username or password.";
      if (step === "recovery-step") {
        return "That recovery code is not right, or it has been used already.";
      }
      return (
        "That code is not right. Enter the code your authenticator app shows now " +
        "(each code works once)."
      );
    }
    return `Could not sign in: ${detail(result) || `HTTP ${result.status}`}.`;
  }

  // ================================================================ signing in

  async function logIn(step, extra) {
    busy(step, true);
    say("");
    const result = await post("/api/v1/login", {
      username: login.username,
      password: login.password,
      ...extra,
    });
    busy(step, false);
    if (result.ok && result.body) return loggedIn(result.body);
    const error = result.body && result.body.error;
    if (result.status === 401 && error === "totp_required") {
      show("code-step");
      return;
    }
    const message = refusal(result, step);
    if (result.status === 429 || /username or password/.test(detail(result))) {
      startOver(message); // the password is what to type again (or nothing, for a while)
      return;
    }
    say(message);
    const input = $(step).querySelector("input");
    if (input) input.select();
  }

  function loggedIn(body) {
    forgetPassword();
    forgetKey(); // the pages act as this login now, not as a key this tab may have held
    login.csrfToken = body.csrf_token || "";
    if (body.enrol_totp) return beginEnrol();
    if (typeof body.recovery_codes_left === "number") {
      const left = body.recovery_codes_left;
      $("codes-left").textContent =
        `You have ${left} recovery code${left === 1 ? "" : "s"} left.` +
        (left <= 3 ? " Set up your authenticator again soon." : "");
      $("recovered-step").dataset.left = String(left);
      show("recovered-step");
      return;
    }
    goOn();
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    login.username = $("username").value.trim();
    login.password = $("password").value;
    if (!login.username || !login.password) return;
    logIn("login", {});
  });

  $("code-step").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("code").value.replace(/\s+/g, "");
    if (!code) return;
    logIn("code-step", { totp: code });
  });

  $("recovery-step").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("recovery-code").value.trim();
    if (!code) return;
    logIn("recovery-step", { recovery_code: code });
  });

  $("use-recovery").addEventListener("click", () => {
    say("");
    show("recovery-step");
  });
  $("use-code").addEventListener("click", () => {
    say("");
    show("code-step");
  });
  $("start-over").addEventListener("click", () => startOver(""));
  $("recovered-continue").addEventListener("click", goOn);

  // ================================================================ enrolling a second factor

  // The server's QR code (SVG text) as elements: parsed by DOMParser into an inert document
  // (its HTML parser puts <svg> in the SVG namespace), then only QR shapes kept, without
  // event handlers or links. The text comes from this server, but is never HTML-injected.
  function qrElement(svgText) {
    const parsed = new DOMParser().parseFromString(svgText, "text/html");
    const svg = parsed.body.querySelector("svg");
    if (!svg) return null;
    for (const node of [svg, ...svg.querySelectorAll("*")]) {
      if (!SVG_ELEMENTS.has(node.localName)) {
        node.remove();
        continue;
      }
      for (const attribute of [...node.attributes]) {
        const name = attribute.name.toLowerCase();
        if (name.startsWith("on") || name.includes("href") || name === "style") {
          node.removeAttribute(attribute.name);
        }
      }
    }
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    return document.importNode(svg, true);
  }

  async function beginEnrol() {
    say("");
    const result = await post("/api/v1/me/totp", {}, login.csrfToken);
    if (result.status === 401) {
      startOver("Your sign-in has expired. Sign in again to set up two-factor login.");
      return;
    }
    if (!result.ok || !result.body || !result.body.secret) {
      show("enrol-step");
      $("enrol-form").hidden = true;
      say(`Two-factor login could not be set up: ${detail(result) || `HTTP ${result.status}`}.`);
      return;
    }
    const { secret, qr_svg: qrSvg, otpauth_uri: uri } = result.body;
    const qr = typeof qrSvg === "string" ? qrElement(qrSvg) : null;
    $("qr").replaceChildren(...(qr ? [qr] : []));
    $("qr").hidden = !qr;
    // Groups of four, as authenticator apps show and accept them.
    $("secret").textContent = secret.replace(/(.{4})(?=.)/g, "$1 ");
    $("otpauth-link").href = typeof uri === "string" && uri.startsWith("otpauth://") ? uri : "#";
    $("enrol-form").hidden = false;
    $("enrol-code").value = "";
    show("enrol-step");
    $("enrol-code").focus();
  }

  $("enrol-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = $("enrol-code").value.replace(/\s+/g, "");
    if (!code) return;
    busy("enrol-form", true);
    say("");
    const result = await post("/api/v1/me/totp/confirm", { code }, login.csrfToken);
    busy("enrol-form", false);
    if (result.status === 401) {
      startOver("Your sign-in has expired. Sign in again to set up two-factor login.");
      return;
    }
    if (!result.ok || !result.body || !Array.isArray(result.body.recovery_codes)) {
      say(
        result.status === 400
          ? "That code does not match. Check that the phone's clock is right, and enter the " +
              "code the app shows now."
          : `Not turned on: ${detail(result) || `HTTP ${result.status}`}.`,
      );
      $("enrol-code").select();
      return;
    }
    login.csrfToken = result.body.csrf_token || "";
    $("recovery-codes").replaceChildren(
      ...result.body.recovery_codes.map((code) => el("li", {}, el("code", { text: code }))),
    );
    show("codes-step");
  });

  $("copy-codes").addEventListener("click", async () => {
    const codes = [...$("recovery-codes").querySelectorAll("code")].map((c) => c.textContent);
    try {
      await navigator.clipboard.writeText(`rtserver recovery codes\n${codes.join("\n")}\n`);
      $("copy-status").textContent = "Copied.";
    } catch (_) {
      $("copy-status").textContent = "Copying is not allowed here: select the codes instead.";
    }
  });

  $("codes-saved").addEventListener("click", () => {
    $("recovery-codes").replaceChildren(); // not left in the page
    goOn();
  });

  // ================================================================ an API key instead

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    storeKey(key);
    $("key").value = "";
    goOn();
  });

  // A link with #token=... (integrators, the bootstrap key's link): the pages use the key.
  window.addEventListener("hashchange", () => {
    if (takeKeyFromFragment()) goOn();
  });

  // ================================================================ start

  // Already signed in (this browser's cookie): on to `next`, or, for a login that must still
  // enrol its second factor, the enrolment. Otherwise the form.
  async function start() {
    if (takeKeyFromFragment()) {
      goOn();
      return;
    }
    let me = null;
    try {
      const response = await fetch("/api/v1/me", { cache: "no-store", credentials: "same-origin" });
      if (response.ok) me = await response.json();
    } catch (_) {
      me = null;
    }
    if (me && me.via === "cookie") {
      login.csrfToken = me.csrf_token || "";
      if (me.enrol_totp) return beginEnrol();
      return goOn();
    }
    show("login");
  }

  start();
})();

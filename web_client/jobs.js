// HR's jobs page (/jobs): the jobs (each at its latest version), an editor that makes a job
// or a new version of one, and a form that makes an interview for a job.
//
// A job is a competency model (rtserver/scoring/jobs.py): competencies with weights that sum
// to 1 (shown here in %), each described and anchored at levels 1-5, and questions that each
// name the competencies they rate. The server checks everything again and lists every
// problem (400 invalid_job); this page blocks only what it can see at once (the weights'
// total, empty required fields) and shows the server's list as it comes.
//
// The page acts as whoever is signed in, as the observer page does (common.js): the browser
// login (cookie and CSRF token), or an API key kept in this tab's sessionStorage.
// Everything typed or stored reaches the page through textContent and .value only.
"use strict";

(() => {
  const { $, el, setStatus, showError } = window.rtPage;
  const { takeKeyFromFragment, apiKey, storeKey, forgetKey, AuthError, api } = window.rtPage;
  const { signIn, signOut, goToLogin, jsonRequest, errorDetail } = window.rtPage;

  const LEVELS = [1, 2, 3, 4, 5];
  const EXPECTED_LEVELS = new Set([1, 3, 5]); // what an answer at these levels shows is asked for
  const ID_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;

  const state = {
    jobs: [], // GET /api/v1/jobs: each job's latest version
    editing: null, // {id, version, extra}: the job being edited, else a new one
    rowSeq: 0, // row keys: a question's ticks follow its competency through renames
    auditJob: null, // the job whose bias audit is shown
  };

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const jobPath = (id) => `/api/v1/jobs${id ? `/${encodeURIComponent(id)}` : ""}`;

  function dateTime(epochS) {
    if (!isNum(epochS)) return "–";
    return new Date(epochS * 1000).toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  }

  // A weight (0-1) in %, without float noise: 0.1 + 0.2 is shown as 30, not 30.000000000000004.
  const percent = (weight) => Math.round(weight * 100 * 1000) / 1000;

  // ================================================================ signing in

  // A refused credential. An ended browser login (no key in this tab) goes to /login and
  // back here after; a refused key is forgotten and the key form shown with `message`.
  function askForKey(message) {
    if (!apiKey()) {
      goToLogin();
      return;
    }
    forgetKey();
    $("jobs-view").hidden = true;
    $("forget-key").hidden = true;
    $("sign-out").hidden = true;
    $("whoami").hidden = true;
    $("login-link").href = "/login?next=%2Fjobs";
    $("login").hidden = false;
    document.body.dataset.view = "login";
    setStatus("Signed out", "bad");
    showError(message || "");
    $("key").focus();
  }

  // A REST call that sends the page to the key form or /login when it was refused; null then.
  async function call(path, options) {
    try {
      return await api(path, options);
    } catch (error) {
      if (error instanceof AuthError) {
        askForKey(error.message);
        return null;
      }
      setStatus("Offline", "bad");
      throw error;
    }
  }

  // ================================================================ the jobs

  async function loadJobs() {
    let result;
    try {
      result = await call(jobPath());
    } catch (_) {
      showError("The server could not be reached. Reload the page to try again.");
      return;
    }
    if (!result) return;
    if (!result.ok || !result.body || !Array.isArray(result.body.jobs)) {
      showError(`The jobs could not be loaded: ${errorDetail(result)}`);
      return;
    }
    showError("");
    setStatus("Connected", "ok");
    state.jobs = result.body.jobs;
    renderJobs();
    renderJobPicker();
  }

  function renderJobs() {
    const jobs = [...state.jobs].sort((a, b) => String(a.title).localeCompare(String(b.title)));
    $("jobs-body").replaceChildren(
      ...jobs.map((job) => {
        const edit = el("button", {
          type: "button",
          class: "small-btn",
          "aria-label": `Edit ${job.title}`,
          text: "Edit",
        });
        edit.addEventListener("click", () => editJob(job.id));
        const audit = el("button", {
          type: "button",
          class: "small-btn",
          "aria-label": `Bias audit of ${job.title}`,
          text: "Audit",
        });
        audit.addEventListener("click", () => openAudit(job));
        return el(
          "tr",
          { "data-job": job.id },
          el("td", { class: "cell-name" }, el("strong", { text: job.title || job.id })),
          el("td", { class: "num", text: String(job.version) }),
          el("td", { text: competencyNames(job) }),
          el("td", { class: "num", text: String((job.questions || []).length) }),
          el("td", { class: "num", text: isNum(job.threshold) ? String(job.threshold) : "–" }),
          el("td", { text: dateTime(job.created_at) }),
          el("td", { class: "num" }, edit, " ", audit),
        );
      }),
    );
    $("jobs-empty").hidden = jobs.length > 0;
    $("jobs").hidden = jobs.length === 0;
    $("jobs-count").textContent =
      jobs.length === 1 ? "1 job" : `${jobs.length} jobs`;
    document.body.dataset.jobs = String(jobs.length);
  }

  // ================================================================ the bias audit

  function openAudit(job) {
    state.auditJob = job;
    $("audit-title").textContent = `Bias audit: ${job.title || job.id}`;
    $("audit-report").replaceChildren();
    $("audit-error").hidden = true;
    $("audit-view").hidden = false;
    runAudit();
  }

  async function runAudit(event) {
    if (event) event.preventDefault();
    const job = state.auditJob;
    if (!job) return;
    const query = new URLSearchParams({ format: "html" });
    if ($("audit-from").value) query.set("from", $("audit-from").value);
    if ($("audit-to").value) query.set("to", $("audit-to").value);
    let result;
    try {
      result = await call(`${jobPath(job.id)}/audit?${query}`);
    } catch (_) {
      result = { ok: false, status: 0, body: null };
    }
    if (!result) return;
    if (!result.ok || typeof result.body !== "string") {
      $("audit-report").replaceChildren();
      $("audit-error").textContent = `No audit: ${errorDetail(result)}`;
      $("audit-error").hidden = false;
      return;
    }
    $("audit-error").hidden = true;
    // The server escapes every label in the fragment; it holds no script or inline style.
    const template = document.createElement("template");
    template.innerHTML = result.body;
    $("audit-report").replaceChildren(template.content);
    document.body.dataset.audit = job.id;
  }

  const competencyNames = (job) =>
    (job.competencies || []).map((c) => `${c.name} (${percent(c.weight)} %)`).join(", ");

  function renderJobPicker() {
    const select = $("interview-job");
    const chosen = select.value;
    select.replaceChildren(
      el("option", { value: "", text: state.jobs.length ? "Choose a job" : "No jobs yet" }),
      ...state.jobs.map((job) =>
        el("option", { value: job.id, text: `${job.title} (version ${job.version})` }),
      ),
    );
    if (state.jobs.some((job) => job.id === chosen)) select.value = chosen;
  }

  // ================================================================ the editor: rows

  // A labelled field: `control` gets an id of its own for the label.
  function field(label, control, extraClass) {
    const id = `f${++state.rowSeq}`;
    control.id = id;
    return el(
      "div",
      { class: extraClass ? `field ${extraClass}` : "field" },
      el("label", { for: id, text: label }),
      control,
    );
  }

  const input = (cls, attrs) => el("input", { type: "text", class: cls, ...attrs });
  const textarea = (cls, attrs) => el("textarea", { class: cls, rows: 2, ...attrs });

  // Lower-case letters, digits and _ from a competency's name: its id until someone edits it.
  function idFrom(name) {
    const id = name
      .toLowerCase()
      .normalize("NFKD")
      .replace(/[^a-z0-9]+/g, "_")
      .replace(/^[^a-z]+|_+$/g, "");
    return id.slice(0, 64);
  }

  function competencyRow(c) {
    const key = `c${++state.rowSeq}`;
    const row = el("div", { class: "row competency-row", "data-row": key });
    const id = input("c-id", { maxlength: 64, pattern: "[a-z][a-z0-9_]{0,63}", required: true });
    const name = input("c-name", { maxlength: 200, required: true });
    const weight = el("input", {
      type: "number",
      class: "c-weight",
      min: 0,
      max: 100,
      step: "any",
      required: true,
    });
    const description = textarea("c-description", { maxlength: 2000 });
    const skills = input("c-skills", { placeholder: "Python, PostgreSQL" });
    id.value = c ? c.id : "";
    name.value = c ? c.name : "";
    weight.value = c && isNum(c.weight) ? String(percent(c.weight)) : "";
    description.value = c ? c.description || "" : "";
    skills.value = c && Array.isArray(c.skills) ? c.skills.join(", ") : "";
    // A new competency's id follows its name until it is edited by hand.
    id.dataset.auto = c ? "" : "1";
    id.addEventListener("input", () => {
      id.dataset.auto = "";
      refreshTargets();
    });
    name.addEventListener("input", () => {
      if (id.dataset.auto) id.value = idFrom(name.value);
      refreshTargets();
    });
    weight.addEventListener("input", showWeightTotal);

    const anchors = el("div", { class: "anchors" });
    for (const level of LEVELS) {
      const expected = EXPECTED_LEVELS.has(level);
      const anchor = textarea("c-anchor", {
        "data-level": level,
        maxlength: 2000,
        required: expected,
      });
      anchor.value = c && c.anchors ? c.anchors[String(level)] || "" : "";
      anchors.append(field(`Level ${level}${expected ? "" : " (optional)"}`, anchor));
    }
    const remove = el("button", { type: "button", class: "small-btn", text: "Remove competency" });
    remove.addEventListener("click", () => {
      row.remove();
      refreshTargets();
      showWeightTotal();
    });
    row.append(
      el(
        "div",
        { class: "field-row" },
        field("Name", name, "grow"),
        field("Id", id),
        field("Weight (%)", weight, "narrow"),
      ),
      field("Description", description),
      el("p", { class: "muted small anchors-help", text: "What an answer at each level shows:" }),
      anchors,
      field("Skills (comma-separated)", skills),
      el("div", { class: "row-actions" }, remove),
    );
    return row;
  }

  function questionRow(q) {
    const row = el("div", { class: "row question-row", "data-row": `q${++state.rowSeq}` });
    const text = textarea("q-text", { maxlength: 2000, required: true });
    const seconds = el("input", {
      type: "number",
      class: "q-seconds",
      min: 1,
      max: 3600,
      step: 1,
      required: true,
    });
    text.value = q ? q.text : "";
    seconds.value = q && Number.isInteger(q.seconds) ? String(q.seconds) : "120";
    const targets = el("fieldset", { class: "q-targets" }, el("legend", { text: "Rates" }));
    // Ticked competencies by row key, so that renaming a competency keeps its ticks.
    targets.dataset.ticked = JSON.stringify(q ? rowKeysOf(q.competencies || []) : []);
    const remove = el("button", { type: "button", class: "small-btn", text: "Remove question" });
    remove.addEventListener("click", () => row.remove());
    row.append(
      el("div", { class: "field-row" }, field("Question", text, "grow"), field("Seconds", seconds, "narrow")),
      targets,
      el("div", { class: "row-actions" }, remove),
    );
    return row;
  }

  const competencyRows = () => [...$("competencies").querySelectorAll(".competency-row")];
  const questionRows = () => [...$("questions").querySelectorAll(".question-row")];

  function rowKeysOf(ids) {
    return competencyRows()
      .filter((row) => ids.includes(row.querySelector(".c-id").value))
      .map((row) => row.dataset.row);
  }

  // Each question's checkboxes: one per competency, by its name, ticks kept.
  function refreshTargets() {
    const competencies = competencyRows().map((row) => ({
      key: row.dataset.row,
      label: row.querySelector(".c-name").value.trim() || row.querySelector(".c-id").value || "(unnamed)",
    }));
    for (const row of questionRows()) {
      const box = row.querySelector(".q-targets");
      const ticked = new Set(JSON.parse(box.dataset.ticked || "[]"));
      const legend = box.querySelector("legend");
      box.replaceChildren(
        legend,
        ...competencies.map(({ key, label }) => {
          const tick = el("input", { type: "checkbox", value: key, checked: ticked.has(key) });
          tick.addEventListener("change", () => {
            const now = [...box.querySelectorAll("input:checked")].map((x) => x.value);
            box.dataset.ticked = JSON.stringify(now);
          });
          return el("label", { class: "tick" }, tick, ` ${label}`);
        }),
      );
      if (!competencies.length) box.append(el("span", { class: "muted small", text: "Add a competency first." }));
    }
  }

  // The weights' running total; saving waits until it is 100 %.
  function weightTotal() {
    return competencyRows().reduce((sum, row) => {
      const v = Number(row.querySelector(".c-weight").value);
      return sum + (Number.isFinite(v) ? v : 0);
    }, 0);
  }

  const weightsOk = () => Math.abs(weightTotal() - 100) < 1e-4;

  function showWeightTotal() {
    const total = Math.round(weightTotal() * 1000) / 1000;
    const ok = weightsOk();
    const box = $("weight-total");
    box.textContent = ok
      ? `Weights: ${total} % of 100 %.`
      : `Weights: ${total} % of 100 %. They must add up to 100 % before the job can be saved.`;
    box.classList.toggle("bad", !ok);
    $("save-job").disabled = !ok;
    document.body.dataset.weightTotal = String(total);
  }

  // ================================================================ the editor: the job

  function fillForm(job) {
    state.editing = job
      ? {
          id: job.id,
          version: job.version,
          // Kept as they were: what this page does not edit.
          extra: {
            delivery_weight: job.delivery_weight || 0,
            face_signals: !!job.face_signals,
            webhooks: Array.isArray(job.webhooks) ? job.webhooks : [],
          },
        }
      : null;
    $("job-title").value = job ? job.title : "";
    $("job-threshold").value = job && isNum(job.threshold) ? String(job.threshold) : "70";
    $("competencies").replaceChildren(
      ...(job ? job.competencies : [null]).map((c) => competencyRow(c)),
    );
    $("questions").replaceChildren(...(job ? job.questions : [null]).map((q) => questionRow(q)));
    refreshTargets();
    showWeightTotal();
    showProblems([]);
    $("save-status").textContent = "";
    $("editor-title").textContent = job
      ? `Edit job: ${job.title} (version ${job.version})`
      : "New job";
    $("save-job").textContent = job ? `Save as version ${job.version + 1}` : "Save job";
    $("cancel-edit").hidden = !job;
    document.body.dataset.editing = job ? job.id : "";
  }

  function readForm() {
    const keyToId = new Map(
      competencyRows().map((row) => [row.dataset.row, row.querySelector(".c-id").value.trim()]),
    );
    const competencies = competencyRows().map((row) => {
      const anchors = {};
      for (const anchor of row.querySelectorAll(".c-anchor")) {
        if (anchor.value.trim()) anchors[anchor.dataset.level] = anchor.value.trim();
      }
      return {
        id: row.querySelector(".c-id").value.trim(),
        name: row.querySelector(".c-name").value.trim(),
        // % to a share of 1, rounded so that 70 % + 30 % sum to 1 exactly enough.
        weight: Math.round(Number(row.querySelector(".c-weight").value) * 1e4) / 1e6,
        description: row.querySelector(".c-description").value.trim(),
        anchors,
        skills: row
          .querySelector(".c-skills")
          .value.split(",")
          .map((s) => s.trim())
          .filter(Boolean),
      };
    });
    const questions = questionRows().map((row) => ({
      text: row.querySelector(".q-text").value.trim(),
      seconds: Math.round(Number(row.querySelector(".q-seconds").value)),
      competencies: [...row.querySelectorAll(".q-targets input:checked")]
        .map((tick) => keyToId.get(tick.value))
        .filter(Boolean),
    }));
    return {
      title: $("job-title").value.trim(),
      threshold: Number($("job-threshold").value),
      competencies,
      questions,
      ...(state.editing ? state.editing.extra : {}),
    };
  }

  function showProblems(problems) {
    $("job-problems").replaceChildren(...problems.map((p) => el("li", { text: String(p) })));
    $("job-problems-box").hidden = problems.length === 0;
  }

  // What this page can tell before the server does.
  function formProblems(job) {
    const problems = [];
    if (!weightsOk()) problems.push("The competencies' weights must add up to 100 %.");
    for (const c of job.competencies) {
      if (!ID_PATTERN.test(c.id)) {
        problems.push(`The id "${c.id}" must be lower-case letters, digits and _, from a letter.`);
      }
    }
    job.questions.forEach((q, i) => {
      if (!q.competencies.length) problems.push(`Question ${i + 1} must rate at least one competency.`);
    });
    return problems;
  }

  async function saveJob(event) {
    event.preventDefault();
    const job = readForm();
    const problems = formProblems(job);
    showProblems(problems);
    if (problems.length) return;
    const editing = state.editing;
    $("save-job").disabled = true;
    $("save-status").textContent = "Saving…";
    let result;
    try {
      result = await call(jobPath(editing && editing.id), jsonRequest(editing ? "PUT" : "POST", job));
    } catch (_) {
      showProblems(["The server could not be reached: the job was not saved."]);
      $("save-status").textContent = "";
      showWeightTotal();
      return;
    }
    if (!result) return;
    showWeightTotal();
    if (result.ok && result.body) {
      const saved = result.body;
      await loadJobs();
      fillForm(saved);
      $("save-status").textContent = `Saved “${saved.title}”, version ${saved.version}.`;
      return;
    }
    $("save-status").textContent = "";
    const listed = result.body && Array.isArray(result.body.problems) ? result.body.problems : null;
    showProblems(listed && listed.length ? listed : [errorDetail(result)]);
  }

  async function editJob(id) {
    let result;
    try {
      result = await call(jobPath(id));
    } catch (_) {
      showError("The server could not be reached.");
      return;
    }
    if (!result) return;
    if (!result.ok || !result.body) {
      showError(`The job could not be loaded: ${errorDetail(result)}`);
      return;
    }
    fillForm(result.body);
    $("editor-title").scrollIntoView({ block: "start" });
    $("job-title").focus({ preventScroll: true });
  }

  // ================================================================ a new interview

  async function createInterview(event) {
    event.preventDefault();
    const error = $("interview-error");
    const job = $("interview-job").value;
    error.hidden = true;
    if (!job) {
      error.textContent = "Choose the job the interview is for.";
      error.hidden = false;
      return;
    }
    const candidate = $("interview-candidate").value.trim();
    const body = candidate ? { candidate, job } : { job };
    $("interview-create").disabled = true;
    let result;
    try {
      result = await call("/api/v1/sessions", jsonRequest("POST", body));
    } catch (_) {
      result = { status: 0, body: { detail: "the server could not be reached" } };
    } finally {
      $("interview-create").disabled = false;
    }
    if (!result) return;
    if (result.status !== 201 || !result.body) {
      error.textContent = `The interview was not created: ${errorDetail(result)}`;
      error.hidden = false;
      return;
    }
    const made = result.body;
    const link = $("interview-candidate-link");
    link.href = made.candidate_url;
    link.textContent = made.candidate_url;
    $("interview-observe-link").href = `/observe/${encodeURIComponent(made.id)}`;
    $("interview-expires").textContent = dateTime(made.expires_at);
    $("interview-made").hidden = false;
    $("interview-made").dataset.session = made.id;
    $("interview-candidate").value = "";
  }

  // ================================================================ page wiring

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    storeKey(key);
    $("key").value = "";
    location.reload(); // a clean start with the new key
  });
  $("forget-key").addEventListener("click", () => askForKey(""));
  $("sign-out").addEventListener("click", async () => {
    $("sign-out").disabled = true;
    if (!(await signOut())) {
      $("sign-out").disabled = false;
      showError("You are still signed in: the server could not be reached. Try again.");
    }
  });
  $("new-job").addEventListener("click", () => {
    fillForm(null);
    $("editor-title").scrollIntoView({ block: "start" });
    $("job-title").focus({ preventScroll: true });
  });
  $("cancel-edit").addEventListener("click", () => fillForm(null));
  $("add-competency").addEventListener("click", () => {
    const row = competencyRow(null);
    $("competencies").append(row);
    refreshTargets();
    showWeightTotal();
    row.querySelector(".c-name").focus();
  });
  $("add-question").addEventListener("click", () => {
    const row = questionRow(null);
    $("questions").append(row);
    refreshTargets();
    row.querySelector(".q-text").focus();
  });
  $("job-form").addEventListener("submit", saveJob);
  $("interview-form").addEventListener("submit", createInterview);
  $("audit-form").addEventListener("submit", runAudit);
  window.addEventListener("hashchange", () => {
    if (!new URLSearchParams(location.hash.replace(/^#/, "")).get("token")) return;
    takeKeyFromFragment();
    location.reload();
  });

  // Who is signed in first (GET /api/v1/me); then the jobs.
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
    $("jobs-view").hidden = false;
    document.body.dataset.view = "jobs";
    setStatus("Loading…", "warn");
    fillForm(null);
    loadJobs();
  }

  takeKeyFromFragment();
  start();
})();

// The cfaas portal: plain JavaScript over the gateway's own API, same origin.
// The browser sends the /system Basic credentials it was asked for with every
// request. Nothing is loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { session: null, functions: [], results: new Map(), selected: null, timer: null };
const LIVE = new Set(["queued", "scheduled", "running", "retrying"]);

function showError(text) {
  const e = $("error");
  e.textContent = text || "";
  e.hidden = !text;
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options));
  return r;
}

async function json(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()).trim());
  return r.json();
}

function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return n;
}

function badge(s) {
  return el("span", { class: "badge state-" + s, "data-state": s }, s);
}

function when(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleTimeString();
}

// ---- pages ------------------------------------------------------------------

function showPage(name) {
  for (const s of document.querySelectorAll("[data-page]")) s.hidden = s.id !== name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === name);
  clearInterval(state.timer);
  state.timer = null;
  if (name === "functions") loadFunctions();
  if (name === "invoke") fillFunctionSelect();
  if (name === "calls") {
    loadCalls();
    state.timer = setInterval(loadCalls, 1000);
  }
  if (name === "dead-letters") loadDeadLetters();
}

function route() {
  const name = (location.hash || "#functions").slice(1);
  showPage(document.getElementById(name) && document.getElementById(name).hasAttribute("data-page") ? name : "functions");
}

// ---- functions --------------------------------------------------------------

async function loadFunctions() {
  try {
    const list = await json("/system/functions");
    state.functions = list.sort((a, b) => a.name.localeCompare(b.name));
    const rows = $("functions-rows");
    rows.replaceChildren();
    if (!list.length) rows.append(el("tr", {}, el("td", { colspan: 5 }, "No functions deployed.")));
    for (const f of state.functions) {
      const ready = f.availableReplicas ?? f.replicas ?? 0;
      rows.append(el("tr", { "data-function": f.name },
        el("td", {}, f.name),
        el("td", {}, ready + " / " + (f.replicas ?? ready)),
        el("td", { class: "num" }, f.invocationCount ?? 0),
        el("td", {}, f.image || ""),
        el("td", {}, el("button", { type: "button", onclick: () => { location.hash = "#invoke"; pick(f.name); } }, "Invoke"))));
    }
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function fillFunctionSelect() {
  if (!state.functions.length) {
    try { state.functions = await json("/system/functions"); } catch (e) { showError(e.message); }
  }
  const sel = $("inv-function");
  const keep = sel.value;
  sel.replaceChildren(...state.functions.map((f) => el("option", { value: f.name }, f.name)));
  if (keep) sel.value = keep;
}

function pick(name) {
  fillFunctionSelect().then(() => { $("inv-function").value = name; });
}

// ---- invoke -----------------------------------------------------------------

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function parseHeaders(text) {
  const h = new Headers();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) h.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return h;
}

function headerText(headers) {
  return [...headers.entries()].map(([k, v]) => k + ": " + v).join("\n");
}

async function invoke(ev) {
  ev.preventDefault();
  const fn = $("inv-function").value;
  if (!fn) return;
  let path = $("inv-path").value.trim();
  if (path && !path.startsWith("/") && !path.startsWith("?")) path = "/" + path;
  const async = mode() === "async";
  const headers = parseHeaders($("inv-headers").value);
  const method = async ? "POST" : $("inv-method").value;
  if (async) {
    let cb = $("inv-callback").value.trim();
    if (!cb) {
      // the portal's own receiver, good for this one call id only
      const r = await api("/ui/api/callback", { method: "POST" });
      if (!r.ok) { showError("no receiver: " + r.status + " " + (await r.text()).trim()); return; }
      const doc = await r.json();
      headers.set("X-Call-Id", doc.call_id);
      cb = doc.callback_url;
    }
    headers.set("X-Callback-Url", cb);
    const delay = $("inv-delay").value.trim();
    if (delay && delay !== "0") headers.set("X-Delay-Seconds", delay);
  }
  const body = method === "GET" || method === "HEAD" ? undefined : $("inv-body").value;
  const url = (async ? "/async-function/" : "/function/") + encodeURIComponent(fn) + path;
  $("inv-submit").disabled = true;
  const t0 = performance.now();
  try {
    const r = await api(url, { method, headers, body });
    const text = await r.text();
    const ms = performance.now() - t0;
    $("result").hidden = false;
    $("res-status").textContent = r.status + " " + r.statusText;
    $("res-status").dataset.status = r.status;
    $("res-duration").textContent = ms.toFixed(1) + " ms";
    $("res-headers").textContent = headerText(r.headers);
    const id = r.headers.get("X-Call-Id");
    for (const k of ["res-callid", "res-callid-label", "res-state", "res-state-label"]) $(k).hidden = !async;
    if (async && r.status === 202 && id) {
      $("res-callid").textContent = id;
      $("res-body").textContent = "(waiting for the call's output)";
      followCall(id);
    } else {
      $("res-body").textContent = text;
    }
  } catch (e) {
    showError(e.message);
  } finally {
    $("inv-submit").disabled = false;
  }
}

// Polls the call's record until it is final, then shows the output the
// portal's receiver got.
async function followCall(id) {
  state.following = id;
  for (let i = 0; i < 600 && state.following === id; i++) {
    let rec = null;
    try {
      const r = await api("/async-calls/" + encodeURIComponent(id));
      if (r.ok) rec = await r.json();
    } catch (e) { /* the next round tries again */ }
    if (rec) {
      $("res-state").replaceChildren(badge(rec.state));
      if (!LIVE.has(rec.state)) {
        const out = await output(id);
        $("res-body").textContent = out != null ? out : "(no output received by the portal: the callback went elsewhere)";
        return;
      }
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}

async function output(id, tries = 10) {
  for (let i = 0; i < tries; i++) {
    const meta = await json("/ui/api/results/" + encodeURIComponent(id));
    if (meta.received) {
      const r = await api("/ui/api/results/" + encodeURIComponent(id) + "/body");
      if (r.ok) return r.text();
    }
    if (i + 1 < tries) await new Promise((res) => setTimeout(res, 300));
  }
  return null;
}

// ---- async calls ------------------------------------------------------------

async function loadCalls() {
  const q = new URLSearchParams({ limit: "50" });
  const fn = $("calls-function").value.trim();
  const st = $("calls-state").value;
  if (fn) q.set("function", fn);
  if (st) q.set("state", st);
  try {
    const doc = await json("/system/async-calls?" + q);
    const calls = Array.isArray(doc) ? doc : doc.calls || [];
    calls.sort((a, b) => String(b.submitted || "").localeCompare(String(a.submitted || "")));
    const rows = $("calls-rows");
    rows.replaceChildren();
    if (!calls.length) rows.append(el("tr", {}, el("td", { colspan: 8 }, "No calls.")));
    for (const c of calls) {
      const actions = el("td", {});
      if (LIVE.has(c.state)) actions.append(el("button", { type: "button", class: "cancel", onclick: () => cancel(c.call_id) }, "Cancel"));
      actions.append(el("button", { type: "button", onclick: () => detail(c.call_id) }, "Details"));
      rows.append(el("tr", { "data-call-id": c.call_id },
        el("td", {}, el("code", { title: c.call_id }, c.call_id.slice(0, 8))),
        el("td", {}, c.function),
        el("td", {}, badge(c.state)),
        el("td", { class: "num" }, c.attempt),
        el("td", { class: "num" }, c.status || ""),
        el("td", {}, when(c.submitted)),
        el("td", { class: "num" }, c.duration_seconds != null ? c.duration_seconds.toFixed(3) + " s" : ""),
        actions));
    }
    if (state.selected) detail(state.selected, true);
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function cancel(id) {
  const r = await api("/async-calls/" + encodeURIComponent(id), { method: "DELETE" });
  if (r.status !== 202) showError("cancel " + id + ": " + r.status + " " + (await r.text()).trim());
  loadCalls();
}

async function detail(id, quiet) {
  state.selected = id;
  const box = $("call-detail");
  box.hidden = false;
  $("detail-id").textContent = id;
  try {
    const r = await api("/async-calls/" + encodeURIComponent(id));
    $("detail-record").textContent = r.ok ? JSON.stringify(await r.json(), null, 2) : r.status + " " + (await r.text());
    const out = await output(id, 1);
    $("detail-output").textContent = out != null ? out : "(no output received by the portal)";
  } catch (e) {
    if (!quiet) showError(e.message);
  }
}

// ---- dead letters -----------------------------------------------------------

async function loadDeadLetters() {
  try {
    const doc = await json("/system/dead-letters?limit=100");
    const items = Array.isArray(doc) ? doc : doc.dead_letters || [];
    const rows = $("dl-rows");
    rows.replaceChildren();
    if (!items.length) rows.append(el("tr", {}, el("td", { colspan: 7 }, "No dead letters.")));
    for (const d of items) {
      rows.append(el("tr", { "data-call-id": d.call_id },
        el("td", {}, el("code", { title: d.call_id }, d.call_id.slice(0, 8))),
        el("td", {}, d.function),
        el("td", { class: "reason" }, d.reason),
        el("td", { class: "num" }, d.last_status || ""),
        el("td", { class: "num" }, d.attempts),
        el("td", {}, when(d.dead_lettered)),
        el("td", {},
          el("button", { type: "button", class: "redrive", onclick: () => redrive(d.call_id) }, "Re-drive"),
          el("button", { type: "button", class: "drop", onclick: () => drop(d.call_id) }, "Delete"))));
    }
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function redrive(id) {
  const r = await api("/system/dead-letters/" + encodeURIComponent(id) + "/redrive", { method: "POST" });
  if (r.status !== 202) showError("re-drive " + id + ": " + r.status + " " + (await r.text()).trim());
  else showError("");
  loadDeadLetters();
}

async function drop(id) {
  const r = await api("/system/dead-letters/" + encodeURIComponent(id), { method: "DELETE" });
  if (!r.ok) showError("delete " + id + ": " + r.status);
  loadDeadLetters();
}

// ---- start ------------------------------------------------------------------

async function health() {
  try {
    const r = await api("/readyz");
    $("health").textContent = r.ok ? "ready" : "not ready";
    $("health").className = "badge " + (r.ok ? "state-succeeded" : "state-failed");
  } catch (e) {
    $("health").textContent = "unreachable";
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("functions-refresh").addEventListener("click", loadFunctions);
  $("dl-refresh").addEventListener("click", loadDeadLetters);
  $("invoke-form").addEventListener("submit", invoke);
  $("calls-function").addEventListener("change", loadCalls);
  $("calls-state").addEventListener("change", loadCalls);
  for (const r of document.querySelectorAll("input[name=mode]")) {
    r.addEventListener("change", () => {
      $("async-options").hidden = mode() !== "async";
      $("inv-method").disabled = mode() === "async";
    });
  }
  window.addEventListener("hashchange", route);
  try {
    state.session = await json("/ui/api/session");
    $("inv-callback").placeholder = "(the portal's receiver)";
  } catch (e) {
    showError(e.message);
  }
  health();
  setInterval(health, 5000);
  route();
});

// Counterfoil console: plain JavaScript, no build step. It uses the same
// API and WebSocket as a till.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: "", restaurant: "", lastEvent: 0, ws: null, retry: 500, journey: null, printers: {} };

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function money(minor, currency) {
  return (minor / 100).toFixed(2) + " " + (currency || "");
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "k-" + Date.now() + "-" + Math.random().toString(16).slice(2);
}

async function api(method, path, body, headers) {
  const h = Object.assign({ Authorization: "Bearer " + state.key }, headers || {});
  if (body !== undefined) h["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    const detail = data && data.detail ? data.detail : r.status + " " + r.statusText;
    const err = new Error(detail);
    err.status = r.status;
    throw err;
  }
  return data;
}

function logEvent(e) {
  const li = document.createElement("li");
  li.textContent = `#${e.id} ${new Date(e.at).toLocaleTimeString()} ${e.kind} ${e.subject}`;
  $("event-log").prepend(li);
  while ($("event-log").children.length > 200) $("event-log").lastChild.remove();
}

function paymentRow(p) {
  let tr = document.getElementById("payment-" + p.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.id = "payment-" + p.id;
    tr.className = "clickable";
    tr.addEventListener("click", () => showJourney(p.id));
    $("payment-rows").prepend(tr);
  }
  const receipt = p.receipt ? `${esc(p.receipt.printer)} #${esc(p.receipt.number)}` : "";
  const refunded = (p.refunds || []).map((r) => `refund ${esc(r.status)}`).join(", ");
  tr.innerHTML = `<td>${new Date(p.created_at).toLocaleTimeString()}</td><td>${esc(p.order_ref)}</td>` +
    `<td>${money(p.amount, esc(p.currency))}</td><td class="status ${esc(p.status)}" data-status="${esc(p.status)}">${esc(p.status)}</td>` +
    `<td>${receipt}</td><td>${refunded}</td>`;
}

function printerRow(p) {
  state.printers[p.id] = p;
  let tr = document.getElementById("printer-" + p.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.id = "printer-" + p.id;
    $("printer-rows").appendChild(tr);
  }
  tr.innerHTML = `<td>${esc(p.id)}</td><td class="${p.online ? "online" : "offline"}">${p.online ? "online" : "offline"}</td>` +
    `<td>${esc(p.paper)}</td><td>${esc(p.breaker)}</td><td>${esc(p.last_document ?? "")}</td><td>${esc(p.queued)}</td>` +
    `<td>${esc(p.last_error ?? "")}</td>` +
    `<td><button data-act="x">X report</button> <button data-act="offline">${p.online ? "Unplug" : "Plug in"}</button> ` +
    `<button data-act="paper">${p.paper === "out" ? "Refill" : "Paper out"}</button></td>`;
  tr.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => printerAction(p.id, b.dataset.act)));
}

async function printerAction(id, act) {
  try {
    if (act === "x") {
      await api("POST", `/v1/printers/${encodeURIComponent(id)}/reports/x`);
    } else {
      const p = state.printers[id] || {};
      const faults = { offline: act === "offline" ? p.online : !p.online, paper_out: act === "paper" ? p.paper !== "out" : p.paper === "out" };
      await api("PUT", `/v1/printers/${encodeURIComponent(id)}/simulator`, faults);
    }
  } catch (e) {
    alert(e.message + (e.status === 403 ? " (needs the operator key)" : ""));
  }
}

async function refreshPayment(id) {
  try {
    const p = await api("GET", "/v1/payments/" + encodeURIComponent(id));
    paymentRow(p);
    if (state.journey === id) renderJourney(p);
  } catch (_) { /* another restaurant's or gone */ }
}

function renderJourney(p) {
  $("journey").hidden = false;
  $("journey-id").textContent = p.id;
  $("journey-steps").innerHTML = p.journey.map((s) => {
    const d = s.detail || {};
    const extra = [d.printer, d.document !== undefined && d.document !== null ? "doc " + (d.document.number ?? d.document) : "", d.reason]
      .filter(Boolean).map(esc).join(" · ");
    return `<li><strong>${esc(s.kind)}</strong> <small>${new Date(s.at).toLocaleTimeString()}</small> ${extra}</li>`;
  }).join("");
  $("refund").disabled = p.status !== "fiscalized";
}

async function showJourney(id) {
  state.journey = id;
  await refreshPayment(id);
}

async function loadParked() {
  try {
    const list = await api("GET", "/v1/operator/sagas");
    $("parked").hidden = false;
    $("parked-rows").innerHTML = list.map((s) =>
      `<tr><td><code>${esc(s.id)}</code></td><td>${esc(s.kind)}</td><td>${esc(s.restaurant)}</td><td>${esc(s.step)}</td>` +
      `<td>${esc(s.reason)}</td><td><button data-id="${esc(s.id)}" data-act="retry">Retry</button> ` +
      `<button data-id="${esc(s.id)}" data-act="applied">It happened</button> ` +
      `<button data-id="${esc(s.id)}" data-act="not_applied">It did not</button></td></tr>`).join("");
    $("parked-rows").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => parkedAction(b.dataset.id, b.dataset.act)));
  } catch (e) {
    if (e.status === 403) $("parked").hidden = true;
  }
}

async function loadUnknown() {
  try {
    const list = await api("GET", "/v1/operator/print-jobs/unknown");
    $("unknown").hidden = list.length === 0;
    $("unknown-rows").innerHTML = list.map((j) =>
      `<tr><td><code>${esc(j.job)}</code></td><td>${esc(j.printer)}</td><td>${esc(j.amount)}</td><td>${esc(j.detail)}</td>` +
      `<td><button data-job="${esc(j.job)}" data-act="printed">Printed as…</button> ` +
      `<button data-job="${esc(j.job)}" data-act="not_printed">Not printed</button></td></tr>`).join("");
    $("unknown-rows").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => unknownAction(b.dataset.job, b.dataset.act)));
  } catch (e) {
    $("unknown").hidden = true;
  }
}

async function unknownAction(job, act) {
  try {
    const body = { job, outcome: act };
    if (act === "printed") {
      const n = prompt("Document number of this sale, read in the device's journal");
      if (!n) return;
      body.document_number = Number(n);
    }
    await api("POST", "/v1/operator/print-jobs/resolve", body);
    await loadUnknown();
    await loadParked();
  } catch (e) {
    alert(e.message);
  }
}

async function parkedAction(id, act) {
  try {
    if (act === "retry") {
      await api("POST", `/v1/operator/sagas/${encodeURIComponent(id)}/retry`);
    } else {
      const body = { outcome: act };
      if (act === "applied") {
        const n = prompt("Document number read on the device (for receipts; leave empty otherwise)");
        if (n) body.document_number = Number(n);
      }
      await api("POST", `/v1/operator/sagas/${encodeURIComponent(id)}/resolve`, body);
    }
    await loadParked();
  } catch (e) {
    alert(e.message);
  }
}

function onEvent(e) {
  state.lastEvent = Math.max(state.lastEvent, e.id);
  logEvent(e);
  if (e.kind.startsWith("payment.") || e.kind.startsWith("refund.") || e.kind.startsWith("receipt.")) {
    refreshPayment(e.subject);
  }
  if (e.kind === "printer.status") {
    const p = Object.assign({}, state.printers[e.subject] || { id: e.subject }, e.data);
    printerRow(p);
  }
  if (e.kind === "payment.parked" || e.kind === "refund.parked") {
    loadParked();
    loadUnknown();
  }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/v1/events?access_token=${encodeURIComponent(state.key)}` +
    (state.lastEvent ? `&after=${state.lastEvent}` : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => { $("conn").textContent = "live"; $("conn").className = "badge on"; state.retry = 500; };
  ws.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (_) { /* ignore */ } };
  ws.onclose = () => {
    $("conn").textContent = "reconnecting"; $("conn").className = "badge off";
    if (state.ws === ws) setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

async function start() {
  localStorage.setItem("counterfoil-key", state.key);
  try {
    const printers = await api("GET", "/v1/printers");
    $("printer-rows").innerHTML = "";
    printers.forEach(printerRow);
    $("pay-printer").innerHTML = printers.map((p) => `<option value="${esc(p.id)}">${esc(p.id)}</option>`).join("");
    if (printers.length) {
      state.restaurant = printers[0].restaurant;
      $("pay-restaurant").value = state.restaurant;
    }
    if (state.restaurant) {
      const page = await api("GET", "/v1/payments?limit=20&restaurant=" + encodeURIComponent(state.restaurant));
      $("payment-rows").innerHTML = "";
      page.items.slice().reverse().forEach(paymentRow);
    }
  } catch (e) {
    $("pay-result").textContent = "Cannot load: " + e.message;
    return;
  }
  loadParked();
  loadUnknown();
  if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
  connect();
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("key").value.trim();
  start();
});

$("pay").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const amount = Number($("pay-amount").value);
  const body = {
    restaurant: $("pay-restaurant").value,
    order_ref: "console-" + Date.now(),
    amount,
    currency: $("pay-currency").value,
    method: "card",
    printer: $("pay-printer").value,
    lines: [{ text: $("pay-text").value, quantity: 1000, unit_price: amount, vat: "A" }],
  };
  try {
    const p = await api("POST", "/v1/payments", body, { "Idempotency-Key": newKey() });
    paymentRow(p);
    $("pay-result").innerHTML = `Payment <code id="last-payment-id">${esc(p.id)}</code>: <span class="status ${esc(p.status)}">${esc(p.status)}</span>`;
    showJourney(p.id);
  } catch (e) {
    $("pay-result").textContent = "Refused: " + e.message;
  }
});

$("refund").addEventListener("click", async () => {
  const id = state.journey;
  if (!id) return;
  try {
    const p = await api("GET", "/v1/payments/" + encodeURIComponent(id));
    await api("POST", `/v1/payments/${encodeURIComponent(id)}/refunds`, { amount: p.amount, reason: "console refund" }, { "Idempotency-Key": newKey() });
  } catch (e) {
    alert(e.message);
  }
});

(function init() {
  const m = location.hash.match(/key=([^&]+)/);
  state.key = m ? decodeURIComponent(m[1]) : (localStorage.getItem("counterfoil-key") || "");
  $("key").value = state.key;
  if (state.key) start();
})();

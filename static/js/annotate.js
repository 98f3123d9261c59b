// The annotate page: keyboard-first labelling with the next item already on the page.
// Submitting shows the next card at once and saves in the background; a failed save is
// retried with the same client UUID, so the server stores it exactly once.
(function () {
  "use strict";
  const root = document.getElementById("annotate");
  if (!root) return;

  const queueEl = document.getElementById("queue");
  const form = document.getElementById("label-form");
  const statusEl = document.getElementById("save-status");
  const multi = root.dataset.multi === "true";
  const target = parseInt(root.dataset.queueTarget || "2", 10);
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"];
  let pending = 0;       // saves not yet acknowledged
  let inflightWant = 0;  // cards asked for and not yet arrived
  let shownAt = performance.now();
  let backDepth = -1;    // how far back in the history strip Backspace has gone

  const cards = () => Array.from(queueEl.querySelectorAll(":scope > article.card"));
  const current = () => cards()[0] || null;
  const choices = () => Array.from(form.querySelectorAll("label.choice"));

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.dataset.kind = kind || "";
  }

  function selected() {
    return choices().filter((c) => c.querySelector("input").checked)
      .map((c) => c.querySelector("input").value);
  }

  function setSelection(labels) {
    for (const c of choices()) {
      const input = c.querySelector("input");
      input.checked = labels.includes(input.value);
      c.classList.toggle("on", input.checked);
    }
  }

  function show() {
    const all = cards();
    // An "empty queue" card only shows when nothing else is left.
    for (const extra of all.filter((c) => c.dataset.empty && c !== all[all.length - 1])) extra.remove();
    const card = current();
    for (const c of cards()) c.hidden = c !== card;
    const labels = card && card.dataset.labels ? JSON.parse(card.dataset.labels) : [];
    setSelection(labels);
    const usable = card && !card.dataset.empty;
    form.classList.toggle("disabled", !usable);
    shownAt = performance.now();
    if (card && !card.dataset.reopened) backDepth = -1;
    if (card) htmx.process(card);
  }

  function queued() {
    return cards().filter((c) => !c.dataset.reopened && !c.dataset.empty).length;
  }

  function toggle(choice) {
    const input = choice.querySelector("input");
    if (multi) input.checked = !input.checked;
    else input.checked = true;
    setSelection(selected());
  }

  function historyEntry(card, labels, skipped) {
    // Shown at once; the server's copy of the strip replaces it when the save lands.
    const list = document.querySelector("#history ol");
    if (!list) return;
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "history-entry pending";
    a.dataset.itemId = card.dataset.itemId;
    a.dataset.labels = JSON.stringify(labels);
    a.href = "#";
    const ext = document.createElement("span");
    ext.className = "ext-id";
    ext.textContent = card.querySelector(".ext-id").textContent;
    const ans = document.createElement("span");
    ans.className = "answer";
    ans.textContent = skipped ? "skipped" : labels.join(", ");
    a.append(ext, " ", ans);
    li.append(a);
    list.querySelectorAll("li.muted").forEach((x) => x.remove());
    list.prepend(li);
    while (list.children.length > 10) list.lastElementChild.remove();
  }

  function submit(skipped) {
    const card = current();
    if (!card || card.dataset.empty) return;
    const labels = skipped ? [] : selected();
    if (!skipped && !multi && labels.length !== 1) {
      setStatus("Choose a label first (1–9), or press Space to skip.", "warn");
      return;
    }
    const spent = Math.round(performance.now() - shownAt);
    card.remove();
    const holding = cards().filter((c) => !c.dataset.empty).map((c) => c.dataset.itemId);
    const want = Math.max(0, target - queued() - inflightWant);
    inflightWant += want;
    const body = new URLSearchParams();
    body.set("item", card.dataset.itemId);
    for (const l of labels) body.append("labels", l);
    body.set("skipped", skipped ? "true" : "");
    body.set("time_spent_ms", String(spent));
    body.set("client_uuid", uuid());
    body.set("exclude", holding.join(","));
    body.set("want", String(want));
    historyEntry(card, labels, skipped);
    if (!current() || current().dataset.empty) setStatus("Loading the next item…", "");
    show();
    send(body, want, 0);
  }

  async function send(body, want, attempt) {
    pending += 1;
    if (attempt) setStatus(`Saving… (retry ${attempt})`, "warn");
    let response;
    try {
      response = await fetch(root.dataset.submitUrl, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrf, "HX-Request": "true" },
        credentials: "same-origin",
      });
    } catch (err) {
      response = null;
    }
    pending -= 1;
    if (response && response.redirected) {
      inflightWant -= want;
      setStatus("Your session has ended: log in again to keep labelling. Your last answer was not saved.", "error");
      return;
    }
    if (!response || response.status >= 500 || response.status === 429) {
      const delay = Math.min(30000, 1000 * 2 ** attempt);
      setStatus(`Not saved yet, retrying in ${Math.round(delay / 1000)} s…`, "warn");
      setTimeout(() => send(body, want, attempt + 1), delay);
      return;
    }
    inflightWant -= want;
    if (!response.ok) {
      let detail = `${response.status}`;
      try { detail = JSON.stringify((await response.json()).errors); } catch (e) { /* not JSON */ }
      setStatus(`This answer was refused: ${detail}`, "error");
      return;
    }
    const html = await response.text();
    const hadCurrent = current() && !current().dataset.empty;
    htmx.swap(queueEl, html, { swapStyle: "beforeend" });
    if (!hadCurrent) show();
    else for (const c of cards().slice(1)) c.hidden = true;
    setStatus(pending ? "Saving…" : "Saved.", "ok");
  }

  async function reopen(itemId, labels) {
    const url = `${root.dataset.submitUrl.replace(/submit\/$/, "items/")}${itemId}/`;
    const response = await fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
    if (!response.ok) { setStatus("That item can no longer be opened.", "error"); return; }
    const tmp = document.createElement("div");
    tmp.innerHTML = await response.text();
    const card = tmp.querySelector("article.card");
    if (!card) return;
    // Prefer the answer just given on this page: its save may still be on its way.
    if (labels) card.dataset.labels = JSON.stringify(labels);
    const cur = current();
    if (cur && cur.dataset.reopened) cur.remove();
    queueEl.prepend(card);
    show();
  }

  function back() {
    const entries = Array.from(document.querySelectorAll("#history a.history-entry"));
    const next = backDepth + 1;
    if (next >= entries.length) { setStatus("No earlier answer to go back to.", "warn"); return; }
    backDepth = next;
    const e = entries[next];
    reopen(e.dataset.itemId, JSON.parse(e.dataset.labels || "[]"));
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    if (key === "Enter") { ev.preventDefault(); submit(false); return; }
    if (key === " ") { ev.preventDefault(); submit(true); return; }
    if (key === "Backspace") { ev.preventDefault(); back(); return; }
    const hit = choices().find((c) => c.dataset.key === key) ||
      choices().find((c) => c.dataset.digit === key);
    if (hit) { ev.preventDefault(); toggle(hit); }
  });

  form.addEventListener("click", (ev) => {
    const choice = ev.target.closest("label.choice");
    if (choice) { ev.preventDefault(); toggle(choice); }
  });
  document.getElementById("submit-btn").addEventListener("click", () => submit(false));
  document.getElementById("skip-btn").addEventListener("click", () => submit(true));
  document.getElementById("back-btn").addEventListener("click", () => back());
  document.addEventListener("click", (ev) => {
    const entry = ev.target.closest("#history a.history-entry");
    if (!entry) return;
    ev.preventDefault();
    reopen(entry.dataset.itemId, JSON.parse(entry.dataset.labels || "[]"));
  });
  // The empty-queue card polls; when it is replaced by a real card, show it.
  document.body.addEventListener("htmx:afterSwap", () => {
    if (current() && current().hidden) show();
  });
  window.addEventListener("beforeunload", (ev) => {
    if (pending) { ev.preventDefault(); ev.returnValue = ""; }
  });

  // Live progress from other annotators over the project websocket.
  function listen(delay) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}${root.dataset.wsPath}`);
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "progress") {
        const done = document.querySelector("[data-progress-complete]");
        const total = document.querySelector("[data-progress-total]");
        if (done) done.textContent = msg.complete;
        if (total) total.textContent = msg.total;
        const bar = document.querySelector("#progress .bar");
        if (bar && msg.total) bar.style.width = `${Math.floor((100 * msg.complete) / msg.total)}%`;
      }
    };
    ws.onclose = (ev) => { if (ev.code !== 4404) setTimeout(() => listen(Math.min(30000, delay * 2)), delay); };
  }
  listen(1000);
  show();
})();

// The annotate page: keyboard-first labelling with the next item already on the page.
//
// #queue holds cards: the current one (visible) and the ones fetched ahead (hidden). Submitting
// removes the current card, shows the next at once and puts the answer in an outbox. The outbox
// is sent one answer at a time, in order (an edit can never overtake the answer it edits), and a
// failed send is retried with the same client UUID, so the server stores it exactly once. Each
// response carries the cards that refill the queue, plus the progress and history panels as
// out-of-band swaps, applied with htmx.swap.
(function () {
  "use strict";
  const root = document.getElementById("annotate");
  if (!root) return;

  const queueEl = document.getElementById("queue");
  const form = document.getElementById("label-form");
  const statusEl = document.getElementById("save-status");
  const multi = root.dataset.multi === "true";
  // "highlight" marks the model's guess on the label buttons; "preselect" also selects it.
  const suggestions = root.dataset.suggestions || "highlight";
  const target = Math.max(1, parseInt(root.dataset.queueTarget || "2", 10));
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"];
  // How often an empty queue asks again (items come back when other annotators' leases expire).
  const pollEmptyMs = () => parseInt(root.dataset.pollMs || "15000", 10);

  const outbox = []; // answers not yet stored, oldest first; outbox[0] is being sent
  let sending = false;
  let halted = false; // the session ended: nothing more can be saved from this page
  let refilling = false;
  let shownCard = null;
  let shownAt = performance.now();
  let backDepth = -1; // how far back in the history strip Backspace has gone
  let pollTimer = null;
  let confirmNone = null; // multi-label: the card on which Enter with no label was pressed once
  let prompting = false; // a question to the annotator is showing; a finished save must not hide it
  const answered = new Set(); // items answered on this page: a new card for one is stale

  const cards = () => Array.from(queueEl.querySelectorAll(":scope > article.card"));
  const current = () => cards()[0] || null;
  const usable = (card) => card && !card.dataset.empty;
  const choices = () => Array.from(form.querySelectorAll("label.choice"));
  const historyEntries = () => Array.from(document.querySelectorAll("#history a.history-entry"));

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.dataset.kind = kind || "";
  }

  function selected() {
    return choices()
      .map((c) => c.querySelector("input"))
      .filter((input) => input.checked)
      .map((input) => input.value);
  }

  function setSelection(labels) {
    for (const c of choices()) {
      const input = c.querySelector("input");
      input.checked = labels.includes(input.value);
      c.classList.toggle("on", input.checked);
    }
  }

  // Items the page holds: cards in the queue and answers still in the outbox. The server must
  // not hand any of them out again as "next".
  function heldItemIds() {
    const ids = new Set(cards().filter(usable).map((c) => c.dataset.itemId));
    for (const entry of outbox) ids.add(entry.itemId);
    return Array.from(ids);
  }

  // Cards fetched ahead (not reopened answers, not the empty-queue notice).
  function queued() {
    return cards().filter((c) => usable(c) && !c.dataset.reopened).length;
  }

  function tidy() {
    const all = cards();
    const seen = new Set();
    for (const c of all) {
      if (c.dataset.empty) {
        // An "empty queue" notice only stays when nothing else is left, and only the newest.
        if (all.some(usable) || c !== all[all.length - 1]) c.remove();
        continue;
      }
      const stale = !c.dataset.reopened && answered.has(c.dataset.itemId);
      if (stale || seen.has(c.dataset.itemId)) c.remove();
      else seen.add(c.dataset.itemId);
    }
  }

  // Make the first card the visible one. Selection and timer reset only when it changes.
  function show() {
    tidy();
    const card = current();
    for (const c of cards()) c.hidden = c !== card;
    form.classList.toggle("disabled", !usable(card));
    form.setAttribute("aria-disabled", usable(card) ? "false" : "true");
    if (card === shownCard) return;
    shownCard = card;
    shownAt = performance.now();
    confirmNone = null;
    prompting = false;
    if (statusEl.dataset.kind === "warn" && outbox.every((e) => !e.attempt)) setStatus("", "");
    setSelection(card && card.dataset.labels ? JSON.parse(card.dataset.labels) : []);
    showSuggestion(card);
    if (card && !card.dataset.reopened) backDepth = -1;
    clearTimeout(pollTimer);
    if (card && card.dataset.empty) pollTimer = setTimeout(refill, pollEmptyMs());
    if (!card) {
      setStatus("Loading the next item…", "");
      if (!sending) refill();
    }
  }

  // The model's guess for the card (absent for evaluation items and reopened answers).
  function showSuggestion(card) {
    const guess = card && card.dataset.suggest ? JSON.parse(card.dataset.suggest) : [];
    for (const c of choices()) {
      c.classList.toggle("suggested", guess.includes(c.querySelector("input").value));
    }
    if (suggestions === "preselect" && guess.length && !card.dataset.labels) setSelection(guess);
  }

  const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(100 * x)}%`);

  // Inside the panel only: the panel itself carries data-model-version too.
  function setText(selector, text) {
    const el = document.getElementById("model").querySelector(selector);
    if (el) el.textContent = text;
  }

  // The same sentences as the server-rendered panel (annotate.html).
  function modelState(msg) {
    if (msg.ranked_by === "endpoint") {
      return "The queue is ranked by your prediction endpoint; the model learns for the accuracy and suggestions.";
    }
    if (!msg.ranking) return "Learning: the queue serves typical items until two classes have labels.";
    if (msg.cold) return "Ranking the queue; suggestions start once every class has a label.";
    return "Ranking the queue: most informative items first.";
  }

  // "The model needs examples of: cat (0/3), dog (1/3)", hidden once every class has enough.
  const NEEDS_SHOWN = 12;
  function showNeeds(needs) {
    const line = document.getElementById("model").querySelector("[data-model-needs]");
    if (!line) return;
    const shown = needs.slice(0, NEEDS_SHOWN).map((n) => `${n.name} (${n.labels}/${n.wanted})`);
    const more = needs.length > NEEDS_SHOWN ? ` and ${needs.length - NEEDS_SHOWN} more` : "";
    setText("[data-model-needs-list]", shown.join(", ") + more);
    line.hidden = !needs.length;
  }

  // A new model version arrived over the websocket (textContent only: nothing here is HTML).
  function showModel(msg) {
    const panel = document.getElementById("model");
    if (!panel) return;
    panel.dataset.modelVersion = String(msg.version);
    setText("[data-model-version]", String(msg.version));
    setText("[data-model-labels]", String(msg.labels_used));
    setText("[data-model-since]", String(msg.since || 0));
    setText("[data-model-state]", modelState(msg));
    showNeeds(msg.needs || []);
    const ev = msg.eval || {};
    setText(
      "[data-model-eval]",
      ev.total
        ? `${pct(ev.accuracy)} (${pct(ev.low)}–${pct(ev.high)}, n=${ev.total})`
        : "not measured yet"
    );
    setText("[data-model-cv]", pct(msg.estimated_accuracy));
  }

  function toggle(choice) {
    const input = choice.querySelector("input");
    input.checked = multi ? !input.checked : true;
    setSelection(selected());
  }

  // The history strip: the server renders it; answers still in the outbox are shown on top.
  function historyItem(entry) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "history-entry pending";
    a.dataset.itemId = entry.itemId;
    a.dataset.labels = JSON.stringify(entry.labels);
    a.href = entry.href;
    a.title = "Not saved yet";
    const ext = document.createElement("span");
    ext.className = "ext-id";
    ext.textContent = entry.extId;
    const ans = document.createElement("span");
    ans.className = "answer";
    ans.textContent = entry.skipped ? "skipped" : entry.labels.join(", ") || "none";
    a.append(ext, " ", ans);
    li.append(a);
    return li;
  }

  function renderPendingHistory() {
    const list = document.querySelector("#history ol");
    if (!list) return;
    list.querySelectorAll("a.history-entry.pending").forEach((a) => a.parentElement.remove());
    for (const entry of outbox) {
      list.querySelectorAll("a.history-entry").forEach((a) => {
        if (a.dataset.itemId === entry.itemId) a.parentElement.remove();
      });
      list.querySelectorAll("li.muted").forEach((x) => x.remove());
      list.prepend(historyItem(entry));
    }
    while (list.children.length > 10) list.lastElementChild.remove();
  }

  function submit(skipped) {
    const card = current();
    if (!usable(card)) return;
    if (halted) {
      setStatus("Your session has ended: log in again (in another tab) and reload.", "error");
      return;
    }
    const labels = skipped ? [] : selected();
    if (!skipped && !multi && labels.length !== 1) {
      setStatus("Choose a label first (its key or 1–9), or press Space to skip.", "warn");
      prompting = true;
      return;
    }
    if (!skipped && multi && !labels.length && confirmNone !== card) {
      // Also catches a double Enter, which would otherwise answer an item never looked at.
      confirmNone = card;
      prompting = true;
      setStatus("No label chosen: press Enter again to answer “none of these”, or Space to skip.", "warn");
      return;
    }
    if (card.dataset.reopened && !skipped) {
      // Going forward again over an answer left as it was: nothing to save.
      const before = JSON.parse(card.dataset.labels || "[]");
      if (before.length && before.length === labels.length && before.every((l) => labels.includes(l))) {
        card.remove();
        show();
        return;
      }
    }
    if (statusEl.dataset.kind === "error") setStatus("", ""); // seen; the annotator moved on
    outbox.push({
      itemId: card.dataset.itemId,
      extId: card.querySelector(".ext-id").textContent,
      href: card.dataset.href,
      labels,
      skipped,
      spent: Math.round(performance.now() - shownAt),
      uuid: uuid(),
      attempt: 0,
    });
    answered.add(card.dataset.itemId);
    card.remove();
    renderPendingHistory();
    show();
    pump();
  }

  function pump() {
    if (sending || halted || !outbox.length) return;
    sending = true;
    send(outbox[0]);
  }

  async function send(entry) {
    const body = new URLSearchParams();
    body.set("item", entry.itemId);
    for (const l of entry.labels) body.append("labels", l);
    body.set("skipped", entry.skipped ? "true" : "");
    body.set("time_spent_ms", String(entry.spent));
    body.set("client_uuid", entry.uuid);
    body.set("exclude", heldItemIds().filter((id) => id !== entry.itemId).join(","));
    const want = Math.max(0, target - queued());
    body.set("want", String(want));
    if (entry.attempt) setStatus(`Saving… (attempt ${entry.attempt + 1})`, "warn");
    else if (!statusEl.dataset.kind || statusEl.dataset.kind === "ok") setStatus("Saving…", "");
    let response = null;
    let text = "";
    try {
      response = await fetch(root.dataset.submitUrl, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrf, "HX-Request": "true" },
        credentials: "same-origin",
      });
      // The whole body (the next cards) before `sending` is released: a send or refill started
      // in between would not name these cards in its exclude list, and get them a second time.
      text = await response.text();
    } catch (err) {
      response = null; // network failure, also mid-body: retried below
    }
    if (response && response.redirected) {
      halted = true;
      sending = false;
      setStatus(
        `Your session has ended: ${outbox.length} answer(s) not saved. Log in again (in another tab) and reload.`,
        "error"
      );
      return;
    }
    if (!response || response.status >= 500 || response.status === 429) {
      entry.attempt += 1;
      const delay = Math.min(30000, 1000 * 2 ** (entry.attempt - 1));
      setStatus(`Not saved yet (${outbox.length} waiting), retrying in ${Math.round(delay / 1000)} s…`, "warn");
      setTimeout(() => send(entry), delay);
      return;
    }
    outbox.shift();
    sending = false;
    if (!response.ok) {
      answered.delete(entry.itemId); // not stored: the server may hand it out again
      let detail = `HTTP ${response.status}`;
      try {
        const errors = JSON.parse(text).errors;
        detail = Object.values(errors).flat().map((e) => (e && e.message) || e).join(" ");
      } catch (e) {
        /* not JSON */
      }
      renderPendingHistory();
      setStatus(`Item ${entry.extId} was not saved: ${detail}`, "error");
    } else {
      htmx.swap(queueEl, text, { swapStyle: "beforeend" });
      renderPendingHistory();
      show();
      if (!outbox.length && statusEl.dataset.kind !== "error" && !prompting) setStatus("Saved.", "ok");
    }
    pump();
    if (!outbox.length && !current()) refill();
  }

  // Fetch cards when the queue ran dry without a submission to carry the request (answers
  // refused, the server slow), and poll while the queue is empty.
  async function refill() {
    if (refilling || sending || halted) return;
    const want = Math.max(1, target - queued());
    refilling = true;
    try {
      const url = new URL(root.dataset.nextUrl, location.href);
      url.searchParams.set("count", String(want));
      url.searchParams.set("exclude", heldItemIds().join(","));
      const response = await fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
      if (response.ok && !response.redirected) {
        htmx.swap(queueEl, await response.text(), { swapStyle: "beforeend" });
        if (statusEl.textContent === "Loading the next item…") setStatus("", "");
      }
    } catch (err) {
      /* offline: the empty-queue poll tries again */
    } finally {
      refilling = false;
    }
    show();
    const card = current();
    if (!card || card.dataset.empty) {
      clearTimeout(pollTimer);
      pollTimer = setTimeout(refill, card ? pollEmptyMs() : 3000);
    }
  }

  async function reopen(url, labels) {
    let response;
    try {
      response = await fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
    } catch (err) {
      response = null;
    }
    if (!response || !response.ok || response.redirected) {
      setStatus("That item cannot be opened right now.", "error");
      return;
    }
    const tmp = document.createElement("template");
    tmp.innerHTML = await response.text();
    const card = tmp.content.querySelector("article.card");
    if (!card) return;
    // Prefer the answer given on this page: its save may still be on its way.
    if (labels) card.dataset.labels = JSON.stringify(labels);
    const cur = current();
    if (cur && cur.dataset.reopened) cur.remove();
    queueEl.prepend(card);
    htmx.process(card);
    show();
  }

  function back() {
    const entries = historyEntries();
    const next = backDepth + 1;
    if (next >= entries.length) {
      setStatus("No earlier answer to go back to.", "warn");
      return;
    }
    backDepth = next;
    const e = entries[next];
    reopen(e.getAttribute("href"), JSON.parse(e.dataset.labels || "[]"));
  }

  const INTERACTIVE = "a, button, input, select, textarea, summary, [contenteditable]";

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.defaultPrevented) return;
    const t = ev.target;
    if (t && t.closest && t.closest("input:not([type=radio]):not([type=checkbox]), textarea, select, [contenteditable]")) return;
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    // Enter and Space on a focused link or button keep their usual meaning; so does Space on a
    // label (reached with Tab), while Enter there submits the answer like anywhere else.
    const onChoice = key === "Enter" && t && t.closest && t.closest("label.choice");
    if ((key === "Enter" || key === " ") && t && t.closest && t.closest(INTERACTIVE) && !onChoice) return;
    if (key === "Enter" || key === " " || key === "Backspace") {
      ev.preventDefault();
      if (ev.repeat) return; // a held key must not answer a run of items
      if (key === "Enter") submit(false);
      else if (key === " ") submit(true);
      else back();
      return;
    }
    if (!usable(current())) return;
    const hit = choices().find((c) => c.dataset.key === key) || choices().find((c) => c.dataset.digit === key);
    if (hit) {
      ev.preventDefault();
      toggle(hit);
    }
  });

  form.addEventListener("submit", (ev) => ev.preventDefault()); // answers go through the outbox
  // A click on a label (the mouse) toggles it here; a click on the input itself comes from the
  // keyboard (Space, arrow keys on a focused radio button), whose native change is kept.
  form.addEventListener("change", () => setSelection(selected()));
  form.addEventListener("click", (ev) => {
    const choice = ev.target.closest("label.choice");
    if (choice && ev.target.tagName !== "INPUT") {
      ev.preventDefault();
      toggle(choice);
    }
  });
  document.getElementById("submit-btn").addEventListener("click", () => submit(false));
  document.getElementById("skip-btn").addEventListener("click", () => submit(true));
  document.getElementById("back-btn").addEventListener("click", () => back());
  // After a mouse click on a button, link or the instructions toggle, keys go back to the page:
  // Enter must submit, not click that control again. (Keyboard activation keeps its focus.)
  root.addEventListener("click", (ev) => {
    const control = ev.detail > 0 && ev.target.closest("button, a, summary");
    if (control) setTimeout(() => control.blur(), 0);
  });
  document.addEventListener("click", (ev) => {
    const entry = ev.target.closest("#history a.history-entry");
    if (!entry || ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    backDepth = historyEntries().indexOf(entry);
    reopen(entry.getAttribute("href"), JSON.parse(entry.dataset.labels || "[]"));
  });
  window.addEventListener("beforeunload", (ev) => {
    if (outbox.length) {
      ev.preventDefault();
      ev.returnValue = "";
    }
  });

  // Live progress and model versions over the project websocket (live.js).
  window.listenToProject(root.dataset.wsPath, (msg) => {
    if (msg.type === "model") {
      showModel(msg);
      return;
    }
    if (msg.type !== "progress") return;
    const since = document.querySelector("[data-model-since]");
    if (since) since.textContent = String((parseInt(since.textContent, 10) || 0) + 1);
    const done = document.querySelector("[data-progress-complete]");
    const total = document.querySelector("[data-progress-total]");
    if (done) done.textContent = msg.complete;
    if (total) total.textContent = msg.total;
    const bar = document.querySelector("#progress .bar");
    if (bar && msg.total) bar.style.width = `${Math.floor((100 * msg.complete) / msg.total)}%`;
  });
  show();
})();

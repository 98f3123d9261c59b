// Live progress of a project's data analyses (annotations/_analysis_runs.html): the project's
// websocket sends {"type": "analysis", run, kind, status, progress, message}; this updates the
// row of that kind. textContent only: nothing here is HTML. Reconnects with backoff.
(function () {
  "use strict";
  const LABELS = { queued: "Queued", running: "Running", done: "Done", failed: "Failed" };
  const panel = () => document.getElementById("analysis-runs");
  if (!panel()) return;

  function update(msg) {
    const root = panel();
    if (!root) return;
    const row = root.querySelector(`[data-analysis-kind="${CSS.escape(String(msg.kind))}"]`);
    if (!row) return;
    const status = row.querySelector("[data-analysis-status]");
    const bar = row.querySelector("[data-analysis-progress]");
    const message = row.querySelector("[data-analysis-message]");
    const button = row.querySelector("button");
    if (status) status.textContent = LABELS[msg.status] || String(msg.status);
    if (bar) bar.value = Number(msg.progress) || 0;
    if (message) message.textContent = String(msg.message || "");
    if (button) button.disabled = msg.status === "queued" || msg.status === "running";
  }

  function listen(delay) {
    if (!("WebSocket" in window)) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}${panel().dataset.wsPath}`);
    } catch (err) {
      return;
    }
    ws.onopen = () => {
      delay = 1000;
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      if (msg.type === "analysis") update(msg);
    };
    ws.onclose = (ev) => {
      if (ev.code !== 4404) setTimeout(() => listen(Math.min(60000, delay * 2)), delay);
    };
  }
  listen(2000);
})();

// Live progress of a project's data analyses (annotations/_analysis_runs.html): the project's
// websocket sends {"type": "analysis", run, kind, status, progress, message}; this updates the
// row of that kind (over live.js). textContent only: nothing here is HTML.
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

  window.listenToProject(panel().dataset.wsPath, (msg) => {
    if (msg.type === "analysis") update(msg);
  });
})();

// Values that depend on the data (bar widths, label colours, heat-map cells) come as data-*
// attributes and are applied here: the Content-Security-Policy allows no inline style attributes,
// while styles set from a script (CSSOM) are allowed. Content added later (htmx swaps, cards
// fetched by the annotate page) is handled by the observer.
(function () {
  "use strict";
  function apply(root) {
    if (!root.querySelectorAll) return;
    const all = (sel) => (root.matches && root.matches(sel) ? [root] : []).concat(Array.from(root.querySelectorAll(sel)));
    for (const el of all("[data-width]")) {
      const width = parseFloat(el.dataset.width);
      el.style.width = `${Number.isFinite(width) ? Math.max(0, Math.min(100, width)) : 0}%`;
    }
    for (const el of all("[data-color]")) el.style.setProperty("--c", el.dataset.color);
    for (const el of all("[data-bg]")) {
      el.style.backgroundColor = el.dataset.bg;
      if (el.dataset.fg) el.style.color = el.dataset.fg;
    }
  }
  apply(document);
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) apply(node);
  }).observe(document.documentElement, { childList: true, subtree: true });
})();

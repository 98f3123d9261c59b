// The data browser's keys: "/" searches, j/k move between rows, Enter or o opens the row's item,
// x ticks its checkbox. Rows come and go with htmx swaps, so they are looked up on each key.
(function () {
  "use strict";
  let current = -1;
  const rows = () => Array.from(document.querySelectorAll("#browse-table tbody tr[data-item]"));
  function focusRow(index) {
    const all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, index));
    for (const row of all) row.classList.remove("current");
    all[current].classList.add("current");
    all[current].querySelector("a.item-link").focus();
  }
  document.addEventListener("htmx:afterSwap", () => { current = -1; });
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.matches("input:not([type=checkbox]), select, textarea")) {
      if (event.key === "Escape") target.blur();
      return;
    }
    const all = rows();
    if (event.key === "/") {
      event.preventDefault();
      document.querySelector("#browse-filters input[name=q]").focus();
    } else if (event.key === "j") {
      focusRow(current + 1);
    } else if (event.key === "k") {
      focusRow(current - 1);
    } else if ((event.key === "o" || event.key === "Enter") && all[current] && target.tagName !== "A") {
      all[current].querySelector("a.item-link").click();
    } else if (event.key === "x" && all[current]) {
      all[current].querySelector("input[name=item]").click();
    } else if (event.key === "n") {
      const next = document.getElementById("next-page");
      if (next) next.click();
    }
  });
})();

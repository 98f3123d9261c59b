// The reviewer page: decide the gold label of disputed items with the keyboard.
//
// The server renders one item at a time inside #review-main; every action (decide, skip, reopen)
// is an htmx form whose response swaps in the next item, already claimed for this reviewer. This
// script only adds the keys: ↑/↓ take an answer's labels, 1–9 (or a class's own key) pick labels,
// "/" goes to the comment, Enter decides, Space skips.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const multi = root.dataset.multi === "true";
  let picked = -1; // index of the candidate whose labels were last taken with ↑/↓

  const form = () => document.getElementById("decide-form");
  const candidates = () => Array.from(document.querySelectorAll("#review-main li.candidate"));
  const choices = () => Array.from(document.querySelectorAll("#decide-form label.choice"));

  function paint() {
    for (const c of choices()) c.classList.toggle("on", c.querySelector("input").checked);
    const chosen = choices()
      .filter((c) => c.querySelector("input").checked)
      .map((c) => c.querySelector("input").value)
      .sort();
    // Mark every answer that says exactly what is selected: that is the candidate being accepted.
    for (const li of candidates()) {
      const labels = JSON.parse(li.dataset.labels || "[]").slice().sort();
      li.classList.toggle("match", chosen.length > 0 && JSON.stringify(labels) === JSON.stringify(chosen));
    }
  }

  function take(index) {
    const list = candidates();
    if (!list.length) return;
    picked = (index + list.length) % list.length;
    const labels = new Set(JSON.parse(list[picked].dataset.labels || "[]"));
    for (const c of choices()) {
      const input = c.querySelector("input");
      input.checked = labels.has(input.value);
    }
    list.forEach((li, i) => li.classList.toggle("picked", i === picked));
    paint();
  }

  function toggle(choice) {
    const input = choice.querySelector("input");
    if (multi) {
      input.checked = !input.checked;
    } else {
      for (const c of choices()) c.querySelector("input").checked = false;
      input.checked = true;
    }
    paint();
  }

  function decide() {
    const f = form();
    if (!f) return;
    if (!choices().some((c) => c.querySelector("input").checked) && !multi) {
      flash("Choose a label first (1–9, or ↑/↓ to take an answer's).");
      return;
    }
    f.requestSubmit();
  }

  function flash(text) {
    let el = document.getElementById("review-hint");
    if (!el) {
      el = document.createElement("p");
      el.id = "review-hint";
      el.className = "alert alert-error";
      el.setAttribute("role", "alert");
      const f = form();
      if (f) f.after(el);
    }
    el.textContent = text;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const inText = event.target.closest && event.target.closest("textarea, input[type=text]");
    if (inText) {
      if (event.key === "Escape") event.target.blur();
      else if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        decide();
      }
      return;
    }
    if (!form()) return;
    // Space on a label reached with Tab ticks it, as on any radio button or checkbox.
    if (event.key === " " && event.target.closest && event.target.closest("label.choice")) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      take(picked + (event.key === "ArrowDown" ? 1 : -1));
    } else if (event.key === "Enter") {
      event.preventDefault();
      decide();
    } else if (event.key === " ") {
      event.preventDefault();
      const skip = document.getElementById("skip-form");
      if (skip) skip.requestSubmit();
    } else if (event.key === "/") {
      event.preventDefault();
      const comment = form().querySelector("textarea[name=comment]");
      if (comment) comment.focus();
    } else {
      const key = event.key.toLowerCase();
      const choice =
        choices().find((c) => c.dataset.key === key) ||
        choices().find((c) => !c.dataset.key && c.dataset.digit === key);
      if (choice) {
        event.preventDefault();
        toggle(choice);
      }
    }
  });

  document.addEventListener("click", (event) => {
    const li = event.target.closest && event.target.closest("#review-main li.candidate");
    if (li) take(candidates().indexOf(li));
  });
  document.addEventListener("change", (event) => {
    if (event.target.closest && event.target.closest("#decide-form")) paint();
  });
  // A new item came in: forget the previous one's picks and put the focus on the new card, so
  // that the keys keep working, a screen reader reads the new item, and Tab starts from there
  // (the swap removed the focused button: the focus would otherwise fall back to the body).
  // htmx wires the new forms only when the swap settles (20 ms later, more on a busy machine); a
  // key pressed before that would submit the bare form and reload the whole page, so wire them now.
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (!event.detail.target || event.detail.target.id !== "review-main") return;
    const main = document.getElementById("review-main");
    if (main) htmx.process(main);
    picked = -1;
    paint();
    const card = document.querySelector("#review-main article.card");
    if (card) card.focus({ preventScroll: true });
  });
  paint();
})();

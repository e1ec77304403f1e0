// Dataset page: the split form only sends the fields of the chosen way of splitting.
// (Stats, rows, dedup review and contamination results are HTMX fragments.)
(function () {
  "use strict";
  const form = document.getElementById("split-form");
  if (!form) return;
  function sync() {
    const mode = form.querySelector('input[name="mode"]:checked').value;
    form.querySelectorAll("[data-mode]").forEach(function (input) {
      input.disabled = input.dataset.mode !== mode;
      input.required = input.dataset.mode === mode;
    });
  }
  form.querySelectorAll('input[name="mode"]').forEach(function (radio) {
    radio.addEventListener("change", sync);
  });
  sync();
})();

// Job form: show only the knobs that apply to the chosen method and adapter (and their conditions, such as
// 4-bit-only settings), disabling the hidden ones so they are not submitted.
(function () {
  "use strict";
  // The preset picker applies its choice at once (no inline handler: the CSP allows no inline script).
  document.querySelectorAll("select[data-submit-on-change]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  const form = document.getElementById("job-form");
  if (!form) return;

  function applies(label) {
    const adapters = (label.dataset.adapters || "").split(" ");
    if (label.dataset.adapters !== undefined && !adapters.includes(form.elements.adapter.value)) {
      return false;
    }
    const methods = (label.dataset.methods || "").split(" ");
    if (label.dataset.methods !== undefined && !methods.includes(form.elements.method.value)) {
      return false;
    }
    const when = label.dataset.when ? JSON.parse(label.dataset.when) : {};
    return Object.entries(when).every(([name, value]) => {
      const field = form.elements[name];
      return field && !field.disabled && String(field.value) === String(value);
    });
  }

  function update() {
    // Twice: a condition may name a field that the first pass shows or hides.
    for (let pass = 0; pass < 2; pass++) {
      form.querySelectorAll("label[data-adapters], label[data-methods], label[data-when]").forEach((label) => {
        const on = applies(label);
        label.hidden = !on;
        label.querySelectorAll("input, select, textarea").forEach((el) => { el.disabled = !on; });
      });
    }
    form.querySelectorAll("fieldset[data-group]").forEach((fieldset) => {
      fieldset.hidden = !fieldset.querySelector("label.field:not([hidden])");
    });
  }

  form.addEventListener("change", update);
  update();
})();

// Job form, devices group: a knob with data-above (distributed_strategy, above num_devices 1)
// shows only while each named field's number is above its value; hidden, it is disabled, so it
// is not posted and the run keeps the default (ddp). Without this script the server shows or
// hides it from the values it last rendered (and shows it with an error it refused).
(function () {
  "use strict";
  const form = document.getElementById("job-form");
  if (!form) return;

  function above(label) {
    const conditions = JSON.parse(label.dataset.above);
    return Object.entries(conditions).every(([name, value]) => {
      const field = form.elements[name];
      if (!field || field.disabled) return false;
      const number = Number(field.value);
      return field.value === "" || Number.isNaN(number) || number > Number(value);
    });
  }

  function update(event) {
    form.querySelectorAll("label[data-above]").forEach((label) => {
      // On load, a field the server refused stays shown with its error until the user acts.
      const on = above(label) || (!event && label.classList.contains("invalid"));
      label.hidden = !on;
      label.querySelectorAll("input, select, textarea").forEach((el) => { el.disabled = !on; });
    });
  }

  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();
})();

// The comparison grid: answers stream in from /api/comparisons/{id}/events (server-sent events).
(function () {
  "use strict";
  const grid = document.getElementById("comparison-grid");
  if (!grid) return;
  const status = document.getElementById("comparison-status");

  function show(output) {
    const cell = grid.querySelector('td[data-generation-id="' + output.id + '"]');
    if (!cell) return;
    cell.querySelector("pre").textContent = output.text;
    cell.className = "output status-" + output.status;
    cell.dataset.status = output.status;
  }

  const source = new EventSource("/api/comparisons/" + grid.dataset.comparisonId + "/events");
  source.addEventListener("output", function (event) { show(JSON.parse(event.data)); });
  source.addEventListener("end", function (event) {
    const ended = JSON.parse(event.data).status;
    status.textContent = ended;
    status.className = "status status-" + ended;
    grid.dataset.ended = "true";
    source.close();
  });
})();

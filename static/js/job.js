// Job page: draw the stored loss curve, then append live points from server-sent events.
(function () {
  "use strict";
  const payload = JSON.parse(document.getElementById("job-data").textContent);
  const job = payload.job;
  const chartEl = document.getElementById("loss-chart");
  const steps = [];
  const losses = [];
  let lastId = 0;
  let lastStatus = job.status;

  function addPoint(metric) {
    lastId = Math.max(lastId, metric.id);
    if (metric.loss === null || metric.loss === undefined) return;
    steps.push(metric.step);
    losses.push(metric.loss);
  }
  payload.metrics.forEach(addPoint);

  const chart = new uPlot(
    {
      width: Math.max(320, chartEl.clientWidth || 720),
      height: 280,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss", size: 70 }],
      series: [{ label: "step" }, { label: "loss", stroke: "#2563eb", width: 2, points: { show: true, size: 4 } }],
    },
    [steps, losses],
    chartEl,
  );

  function redraw() {
    chart.setData([steps, losses]);
    chartEl.dataset.points = String(steps.length);
  }
  redraw();

  function refreshSummary() {
    if (window.htmx) {
      htmx.ajax("GET", "/jobs/" + job.id, { target: "#job-summary", swap: "innerHTML" });
    }
  }

  function showStatus(data) {
    const status = document.getElementById("job-status");
    const progress = document.getElementById("job-progress");
    const step = document.getElementById("job-step");
    if (status) { status.textContent = data.status; status.className = "status status-" + data.status; }
    const max = data.progress.max_steps;
    if (progress) { progress.max = max || 1; progress.value = data.progress.step; }
    if (step) step.textContent = "step " + data.progress.step + (max ? " of " + max : "");
    if (data.status !== lastStatus) { lastStatus = data.status; refreshSummary(); }
  }

  const terminal = ["succeeded", "failed", "cancelled"];
  if (terminal.includes(job.status)) return;
  const source = new EventSource("/api/jobs/" + job.id + "/events?after=" + lastId);
  source.addEventListener("metric", function (event) {
    const metric = JSON.parse(event.data);
    if (metric.id <= lastId) return;
    addPoint(metric);
    redraw();
  });
  source.addEventListener("status", function (event) { showStatus(JSON.parse(event.data)); });
  source.addEventListener("end", function (event) {
    source.close();
    if (JSON.parse(event.data).status !== lastStatus) refreshSummary();
  });
})();

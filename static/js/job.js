// Job page: draw the stored curves, then append live points, status and log lines from
// server-sent events. A reload renders the same stored history and carries on.
(function () {
  "use strict";
  const payload = JSON.parse(document.getElementById("job-data").textContent);
  const job = payload.job;
  const terminal = ["succeeded", "failed", "cancelled"];
  const chartEl = document.getElementById("loss-chart");
  const gridEl = document.getElementById("metric-charts");
  const skip = new Set(["id", "step", "epoch", "time", "loss"]);
  const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  let lastId = 0;
  const markers = []; // job events with a step, drawn as vertical lines on the loss chart
  let lastEventId = 0;
  const severityColors = { error: "#dc2626", warning: "#d97706", info: "#2563eb" };
  let lastStatus = job.status;
  let lastStep = job.progress.step;
  let prevTokens = null; // [num_tokens, time] of the last point with both, for tokens/s
  const timing = []; // [step, time] pairs for the ETA

  function width(el) { return Math.max(280, (el && el.clientWidth) || 520); }

  function tick(v) { // small values (learning rates) need more than uPlot's default digits
    if (v === null || v === undefined) return "";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-2 || a >= 1e6) ? v.toExponential(1) : String(+v.toPrecision(4));
  }

  // Job events (health alarms, early stopping) as vertical lines at their step.
  const markerPlugin = {
    hooks: {
      draw: function (u) {
        const ctx = u.ctx;
        markers.forEach(function (marker) {
          const x = u.valToPos(marker.step, "x", true);
          if (!isFinite(x) || x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
          ctx.save();
          ctx.strokeStyle = severityColors[marker.severity] || "#6b7280";
          ctx.lineWidth = 2;
          ctx.setLineDash([6, 4]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.restore();
        });
      },
    },
  };

  function makeChart(el, label, color, height, plugins) {
    const data = [[], []];
    const plot = new uPlot(
      {
        width: width(el),
        height: height,
        plugins: plugins || [],
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { label: label, size: 70, values: function (u, vals) { return vals.map(tick); } }],
        series: [{ label: "step" }, { label: label, stroke: color, width: 2, value: function (u, v) { return tick(v); }, points: { show: true, size: 4 } }],
      },
      data,
      el,
    );
    return { plot: plot, data: data, el: el, dirty: false };
  }

  const loss = makeChart(chartEl, "loss", colors[0], 280, [markerPlugin]);
  const charts = {};

  function chartFor(key) {
    if (charts[key]) return charts[key];
    let fig = gridEl.querySelector('figure[data-key="' + CSS.escape(key) + '"]');
    if (!fig) {
      fig = document.createElement("figure");
      fig.className = "metric-chart";
      fig.dataset.key = key;
      const caption = document.createElement("figcaption");
      caption.textContent = key;
      const box = document.createElement("div");
      box.className = "chart";
      fig.append(caption, box);
      gridEl.append(fig);
    }
    const hint = document.getElementById("no-metrics");
    if (hint) hint.hidden = true;
    const n = Object.keys(charts).length + 1;
    charts[key] = makeChart(fig.querySelector(".chart"), key, colors[n % colors.length], 200);
    return charts[key];
  }

  function push(chart, step, value) {
    chart.data[0].push(step);
    chart.data[1].push(value);
    chart.dirty = true;
  }

  function addPoint(metric) {
    lastId = Math.max(lastId, metric.id);
    if (metric.time !== null && metric.time !== undefined) timing.push([metric.step, metric.time]);
    if (metric.loss !== null && metric.loss !== undefined) push(loss, metric.step, metric.loss);
    Object.keys(metric).forEach(function (key) {
      const value = metric[key];
      if (skip.has(key) || typeof value !== "number" || !isFinite(value)) return;
      push(chartFor(key), metric.step, value);
    });
    // tokens/s, derived from the tokens seen and the wall time between two logged points.
    if (typeof metric.num_tokens === "number" && typeof metric.time === "number") {
      if (prevTokens && metric.time > prevTokens[1] && metric.num_tokens >= prevTokens[0]) {
        push(chartFor("tokens_per_second"), metric.step, (metric.num_tokens - prevTokens[0]) / (metric.time - prevTokens[1]));
      }
      prevTokens = [metric.num_tokens, metric.time];
    }
    if (typeof metric.epoch === "number") showEpoch(metric.epoch);
  }

  function redraw() {
    [loss].concat(Object.values(charts)).forEach(function (chart) {
      if (!chart.dirty) return;
      chart.plot.setData(chart.data);
      chart.dirty = false;
    });
    chartEl.dataset.points = String(loss.data[0].length);
  }

  // The stored history comes from the metrics API, already in curves and downsampled for
  // drawing (every point stays in the CSV); live points are appended after its last_id.
  function drawHistory(data) {
    lastId = Math.max(lastId, data.last_id || 0);
    (data.curves || []).forEach(function (key) {
      const series = data.series[key];
      const chart = key === "loss" ? loss : chartFor(key);
      chart.data[0] = chart.data[0].concat(series[0]);
      chart.data[1] = chart.data[1].concat(series[1]);
      chart.dirty = true;
    });
    (data.timing || []).forEach(function (pair) { timing.push(pair); });
    if (data.last_tokens) prevTokens = data.last_tokens;
    loss.dirty = true;
    redraw();
  }

  const history = fetch(payload.metrics_url, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("the metrics answered " + response.status);
      return response.json();
    })
    .then(drawHistory)
    .catch(function (error) { chartEl.dataset.error = String(error); });

  // Job events: the page rendered the stored ones (timeline, markers); live ones are added here.
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function timelineItem(event) { // the markup of templates/_job_event.html
    const li = element("li", "timeline-event severity-" + event.severity);
    li.dataset.event = event.kind;
    li.dataset.eventId = String(event.id);
    li.dataset.severity = event.severity;
    li.append(element("span", "event", event.kind.replace(/_/g, " ")));
    if (event.step !== null && event.step !== undefined) {
      li.dataset.step = String(event.step);
      li.append(" ", element("span", "event-step", "at step " + event.step));
    }
    li.append(" ", element("time", "", event.created_at.slice(0, 19).replace("T", " ")));
    li.append(element("p", "event-message", event.message));
    const details = event.details || {};
    if (details.advice) {
      const advice = element("p", "event-advice");
      advice.append(element("strong", "", "What to do:"), " " + details.advice);
      li.append(advice);
    }
    if (details.rows && details.rows.length) {
      const rows = element("p", "event-rows", "The batch's dataset rows: ");
      details.rows.forEach(function (row, i) {
        const link = element("a", "event-row", String(row));
        link.dataset.row = String(row);
        link.href = "/datasets/" + job.dataset_id + "?page=" + (Math.floor(row / payload.rows_per_page) + 1);
        rows.append(link, i < details.rows.length - 1 ? ", " : "");
      });
      li.append(rows);
    }
    return li;
  }

  function redrawMarkers() { // uPlot cannot redraw a chart with no points yet
    if (loss.data[0].length) loss.plot.redraw(false);
  }

  function addMarker(event) {
    if (event.step === null || event.step === undefined) return;
    markers.push({ step: event.step, severity: event.severity });
  }

  function addEvent(event) {
    if (event.id <= lastEventId) return;
    lastEventId = event.id;
    if (event.kind === "phase") return; // "Where the time went" lists them, not the timeline
    addMarker(event);
    const list = document.getElementById("chart-markers");
    if (list && event.step !== null && event.step !== undefined) {
      const item = element("li", "marker severity-" + event.severity, "step " + event.step + ": " + event.kind.replace(/_/g, " "));
      item.dataset.event = event.kind;
      item.dataset.eventId = String(event.id);
      item.dataset.step = String(event.step);
      list.append(item);
    }
    const timeline = document.getElementById("job-timeline");
    if (timeline) timeline.append(timelineItem(event));
    redrawMarkers();
  }

  (payload.events || []).forEach(function (event) {
    lastEventId = Math.max(lastEventId, event.id);
    addMarker(event);
  });
  redrawMarkers();

  function showEpoch(epoch) {
    const el = document.getElementById("job-epoch");
    if (el) el.textContent = "epoch " + epoch.toFixed(2);
  }

  function duration(seconds) {
    seconds = Math.round(seconds);
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    return m ? m + "m " + String(s).padStart(2, "0") + "s" : s + "s";
  }

  function showEta(status, step, max) {
    const el = document.getElementById("job-eta");
    if (!el) return;
    if (status !== "running" || !max || timing.length < 2) { if (status !== "running") el.textContent = ""; return; }
    const first = timing[Math.max(0, timing.length - 20)], last = timing[timing.length - 1];
    if (last[0] <= first[0]) return;
    const perStep = (last[1] - first[1]) / (last[0] - first[0]);
    el.textContent = "ETA " + duration(Math.max(0, (max - step) * perStep));
  }

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
    lastStep = data.progress.step;
    if (progress) { progress.max = max || 1; progress.value = data.progress.step; }
    if (step) step.textContent = "step " + data.progress.step + (max ? " of " + max : "");
    showEta(data.status, data.progress.step, max);
    if (data.status !== lastStatus) { lastStatus = data.status; refreshSummary(); }
  }

  // The training log: append complete lines, keep the last ones, follow the bottom.
  const logEl = document.getElementById("job-log");
  const MAX_LOG_LINES = 1000;
  function screen(text) { // a progress bar's "\r" redraws: keep the last one of each line
    return text.split("\n").map(function (line) {
      const parts = line.split("\r").filter(function (p) { return p; });
      return parts.length ? parts[parts.length - 1] : "";
    }).join("\n");
  }
  function appendLog(text) {
    text = screen(text);
    const atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
    let lines = (logEl.textContent + text).split("\n");
    if (lines.length > MAX_LOG_LINES + 1) lines = lines.slice(lines.length - MAX_LOG_LINES - 1);
    logEl.textContent = lines.join("\n");
    if (atBottom) logEl.scrollTop = logEl.scrollHeight;
  }
  if (logEl) logEl.scrollTop = logEl.scrollHeight;

  if (terminal.includes(job.status)) return;

  // While queued, the position in the queue changes as jobs ahead start: refresh it.
  const queuePoll = setInterval(function () {
    if (lastStatus !== "queued") { clearInterval(queuePoll); return; }
    refreshSummary();
  }, 5000);

  history.then(followMetrics);
  function followMetrics() {
    const source = new EventSource("/api/jobs/" + job.id + "/events?after=" + lastId + "&events_after=" + lastEventId);
    source.addEventListener("metric", function (event) {
      const metric = JSON.parse(event.data);
      if (metric.id <= lastId) return;
      addPoint(metric);
      redraw();
      showEta(lastStatus, Math.max(lastStep, metric.step), job.progress.max_steps);
    });
    source.addEventListener("alarm", function (event) {
      addEvent(JSON.parse(event.data));
    });
    source.addEventListener("status", function (event) {
      const data = JSON.parse(event.data);
      job.progress.max_steps = data.progress.max_steps;
      showStatus(data);
    });
    source.addEventListener("end", function (event) {
      source.close();
      if (JSON.parse(event.data).status !== lastStatus) refreshSummary();
    });
  }

  if (logEl) {
    const logs = new EventSource("/api/jobs/" + job.id + "/logs/stream?offset=" + (logEl.dataset.offset || "0"));
    logs.addEventListener("log", function (event) {
      const data = JSON.parse(event.data);
      logEl.dataset.offset = String(data.offset);
      appendLog(data.text);
    });
    logs.addEventListener("end", function () { logs.close(); });
  }
})();

// Comparison view: overlay the chosen runs' curves on one chart, by step or by tokens seen.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const chartEl = document.getElementById("compare-chart");
  const curveSel = document.getElementById("compare-curve");
  const axisSel = document.getElementById("compare-axis");
  const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#be123c"];
  let plot = null;

  function tick(v) {
    if (v === null || v === undefined) return "";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-2 || a >= 1e6) ? v.toExponential(1) : String(+v.toPrecision(4));
  }

  function table(run, key, axis) {
    const xs = [], ys = [];
    run.metrics.forEach(function (m) {
      const x = m[axis], y = m[key];
      if (typeof x !== "number" || typeof y !== "number" || !isFinite(y)) return;
      xs.push(x);
      ys.push(y);
    });
    return [xs, ys];
  }

  function draw() {
    const key = curveSel.value, axis = axisSel.value;
    const tables = data.runs.map(function (run) { return table(run, key, axis); });
    const drawn = tables.filter(function (t) { return t[0].length > 0; }).length;
    const aligned = tables.some(function (t) { return t[0].length; }) ? uPlot.join(tables) : [[]].concat(tables.map(function () { return []; }));
    const series = [{ label: axis === "step" ? "step" : "tokens seen" }].concat(data.runs.map(function (run, i) {
      return { label: "#" + run.id + " " + run.name, stroke: colors[i % colors.length], width: 2, spanGaps: true, points: { show: true, size: 3 } };
    }));
    if (plot) plot.destroy();
    plot = new uPlot(
      {
        width: Math.max(320, chartEl.clientWidth || 900),
        height: 340,
        scales: { x: { time: false } },
        axes: [{ label: series[0].label }, { label: key, size: 70, values: function (u, vals) { return vals.map(tick); } }],
        series: series,
      },
      aligned,
      chartEl,
    );
    chartEl.dataset.series = String(drawn);
    chartEl.dataset.curve = key;
    chartEl.dataset.axis = axis;
  }

  if (!curveSel.value) { chartEl.dataset.series = "0"; return; }
  curveSel.addEventListener("change", draw);
  axisSel.addEventListener("change", draw);
  draw();
})();

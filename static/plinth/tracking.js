// Run pages: draw the Plotly figures the server built (each chart only once it scrolls
// near the screen, one per animation frame, so a hundred runs never freeze the page),
// the step / time / relative-time switch of the history charts, empty states, "select
// all on page" for the runs table, and the "only differences" toggle.
(function () {
  "use strict";
  var CONFIG = { responsive: true, displaylogo: false };
  var TITLES = { step: "step", time: "time (UTC)", relative: "time since the run started" };
  var queue = [];
  var drawing = false;
  var axisMode = "auto"; // "auto": each chart's own default (step, or time when steps don't vary)
  var lineCharts = [];   // {target, chart} of the history charts, to redraw on a switch

  // The steps or times of trace i (the server sends the one the trace is not drawn with).
  function xsOf(chart, i, which) {
    var alt = chart.alt[i] || {};
    if (alt[which]) { return alt[which]; }
    return chart.axis === which ? chart.figure.data[i].x : [];
  }

  // Relative time in the unit that fits the longest run: seconds, minutes or hours.
  function relativeUnit(chart) {
    var longest = 0;
    chart.alt.forEach(function (alt, i) {
      xsOf(chart, i, "time").forEach(function (t) { if (t - alt.t0 > longest) { longest = t - alt.t0; } });
    });
    if (longest > 3 * 3600 * 1000) { return [3600 * 1000, "h"]; }
    if (longest > 3 * 60 * 1000) { return [60 * 1000, "min"]; }
    return [1000, "s"];
  }

  // Wall-clock axes are drawn in the page's time zone (the one every time on the page is
  // shown in: the account's, else the browser's), named in the title. Plotly reads ms since
  // the epoch as UTC, so each trace is shifted by its zone offset at its first point (a run
  // that crosses a daylight-saving change keeps the offset it started with).
  var ZONE = document.documentElement.getAttribute("data-time-zone") ||
    (window.Intl ? Intl.DateTimeFormat().resolvedOptions().timeZone : "") || "UTC";
  function zoneOffset(ms) {
    try {
      var d = new Date(ms);
      return Date.parse(d.toLocaleString("en-US", { timeZone: ZONE })) -
        Date.parse(d.toLocaleString("en-US", { timeZone: "UTC" }));
    } catch (e) { return 0; } // an unknown zone name: UTC
  }
  function inZone(times) {
    if (!times.length) { return times; }
    var offset = zoneOffset(times[0]);
    return offset ? times.map(function (t) { return t + offset; }) : times;
  }

  // The figure of a line chart drawn against `mode` ("step", "time" or "relative").
  function against(chart, mode) {
    var unit = mode === "relative" ? relativeUnit(chart) : null;
    var data = chart.figure.data.map(function (trace, i) {
      var alt = chart.alt[i];
      var copy = Object.assign({}, trace);
      if (!alt) { return copy; }
      if (mode === "step") { copy.x = xsOf(chart, i, "step"); }
      else if (mode === "time") { copy.x = inZone(xsOf(chart, i, "time")); }
      else { copy.x = xsOf(chart, i, "time").map(function (t) { return (t - alt.t0) / unit[0]; }); }
      return copy;
    });
    var title = mode === "time" ? "time (" + ZONE + ")" : TITLES[mode] + (unit ? " (" + unit[1] + ")" : "");
    var xaxis = { title: { text: title } };
    if (mode === "time") { xaxis.type = "date"; } else { xaxis.type = "linear"; }
    return { data: data, layout: Object.assign({}, chart.figure.layout, { xaxis: xaxis }) };
  }

  function figureFor(chart) {
    if (chart.kind !== "line" || !chart.alt) { return chart.figure; }
    var mode = axisMode === "auto" ? chart.axis : axisMode;
    if (mode !== "step" && chart.alt.some(function (alt, i) {
      return xsOf(chart, i, "time").length !== xsOf(chart, i, "step").length;
    })) {
      mode = "step"; // times unknown for some trace: only steps can be drawn
    }
    return mode === chart.axis && mode !== "time" ? chart.figure : against(chart, mode);
  }

  function drawNext() {
    var item = queue.shift();
    if (!item) { drawing = false; return; }
    if (window.Plotly && document.body.contains(item.target)) {
      var figure = item.chart ? figureFor(item.chart) : item.figure;
      window.Plotly.newPlot(item.target, figure.data, figure.layout, CONFIG);
      item.target.setAttribute("data-drawn", "1");
    }
    window.requestAnimationFrame(drawNext);
  }

  function switchAxis(mode) {
    axisMode = mode;
    lineCharts.forEach(function (item) {
      if (item.target.getAttribute("data-drawn") && window.Plotly && document.body.contains(item.target)) {
        var figure = figureFor(item.chart);
        window.Plotly.react(item.target, figure.data, figure.layout, CONFIG);
      }
    });
  }

  function enqueue(target, figure, chart) {
    queue.push({ target: target, figure: figure, chart: chart });
    if (!drawing) { drawing = true; window.requestAnimationFrame(drawNext); }
  }

  function whenNear(target, figure, chart) {
    if (!("IntersectionObserver" in window)) { enqueue(target, figure, chart); return; }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { observer.disconnect(); enqueue(target, figure, chart); }
      });
    }, { rootMargin: "300px" });
    observer.observe(target);
  }

  function drawFigures(root) {
    root.querySelectorAll("script[data-plotly-figures]").forEach(function (script) {
      if (script.getAttribute("data-read")) { return; }
      script.setAttribute("data-read", "1");
      JSON.parse(script.textContent).forEach(function (chart) {
        var target = document.getElementById(chart.id);
        if (!target) { return; }
        if (chart.kind === "empty" || !chart.figure) {
          // An honest empty state, never an axis from -1 to 1.
          target.classList.add("chart-empty");
          target.textContent = chart.message || "Nothing to draw.";
          return;
        }
        if (chart.kind === "line") { lineCharts.push({ target: target, chart: chart }); }
        whenNear(target, chart.figure, chart);
      });
    });
    [["parcoords-data", "parcoords"], ["scatter-data", "scatter"]].forEach(function (pair) {
      var script = document.getElementById(pair[0]);
      var target = document.getElementById(pair[1]);
      if (script && target && !target.getAttribute("data-drawn")) {
        whenNear(target, JSON.parse(script.textContent));
      }
    });
  }

  function selection(form) {
    var boxes = form.querySelectorAll('input[name="run_ids"]');
    var all = form.querySelector("[data-select-all]");
    var count = form.querySelector("[data-selected-count]");
    var button = form.querySelector("[data-compare-button]");
    function update() {
      var checked = Array.prototype.filter.call(boxes, function (box) { return box.checked; }).length;
      if (count) { count.textContent = checked ? checked + " selected" : "Tick runs to compare them"; }
      if (button) { button.disabled = checked === 0; }
      if (all) {
        all.checked = checked > 0 && checked === boxes.length;
        all.indeterminate = checked > 0 && checked < boxes.length;
      }
    }
    if (all) {
      all.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = all.checked; });
        update();
      });
    }
    boxes.forEach(function (box) { box.addEventListener("change", update); });
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawFigures(document);
    document.querySelectorAll("#compare-form").forEach(selection);
    document.querySelectorAll("[data-only-differences]").forEach(function (toggle) {
      var table = document.getElementById(toggle.getAttribute("data-only-differences"));
      toggle.addEventListener("change", function () {
        if (table) { table.classList.toggle("hide-same", toggle.checked); }
      });
    });
    document.querySelectorAll("[data-axis-switch] input[type=radio]").forEach(function (radio) {
      if (radio.checked) { axisMode = radio.value; }
      radio.addEventListener("change", function () { if (radio.checked) { switchAxis(radio.value); } });
    });
    document.body.addEventListener("htmx:afterSwap", function () { drawFigures(document); });
  });
})();

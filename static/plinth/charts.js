// The one module that draws charts. A chart is a container
//   <div class="chart" data-chart="ID"></div>
// whose figure is in <script type="application/json" id="ID"> (Django's json_script). The
// JSON is either a Plotly figure {data, layout} or a chart of apps.tracking.charts
// {kind, figure, axis, alt, message}. The container shows a skeleton (CSS) until drawn.
//
// plotly.js is loaded once, on demand, when the page has a chart (its URL is the
// data-plotly attribute of this script's tag). Charts near the screen draw at once, the
// others when they scroll near (IntersectionObserver), one per animation frame so a page of
// a hundred charts never freezes. Charts in htmx swaps are drawn when they arrive; when a
// swap replaces a drawn chart's data, the chart is redrawn in place (Plotly.react).
// An empty figure is a sentence, never an axis from -1 to 1. No inline script anywhere:
// the site sends Content-Security-Policy script-src 'self'.
(function () {
  "use strict";
  var CONFIG = { responsive: true, displaylogo: false };
  var EMPTY = "No data to plot yet.";
  var TITLES = { step: "step", time: "time (UTC)", relative: "time since the run started" };
  var me = document.currentScript;
  var PLOTLY = me ? me.getAttribute("data-plotly") : null;
  var plotlyLoading = null;
  var queue = [];
  var drawing = false;
  var observer = null;
  var retired = {}; // drawn charts an htmx swap is removing, by id: a chart with that id coming back reuses them
  var axisMode = "auto"; // "auto": each history chart's own x (step, or time when steps don't vary)

  function loadPlotly() {
    if (window.Plotly) { return Promise.resolve(window.Plotly); }
    if (plotlyLoading) { return plotlyLoading; }
    plotlyLoading = new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.src = PLOTLY;
      tag.async = true;
      tag.onload = function () { resolve(window.Plotly); };
      tag.onerror = function () { plotlyLoading = null; reject(new Error("plotly.js did not load")); };
      document.head.appendChild(tag);
    });
    return plotlyLoading;
  }

  // --- what to draw --------------------------------------------------------------------

  function figureOf(spec) {
    if (!spec) { return null; }
    if (spec.figure) { return spec.figure; }
    return spec.data ? spec : null;
  }

  function traceHasPoints(trace) {
    if (trace.type === "parcoords") {
      return !!(trace.dimensions && trace.dimensions.length && (trace.dimensions[0].values || []).length);
    }
    return ["x", "y", "z", "values"].some(function (key) { return trace[key] && trace[key].length; });
  }

  function isEmpty(spec) {
    var figure = figureOf(spec);
    return !figure || spec.kind === "empty" || !(figure.data || []).some(traceHasPoints);
  }

  // --- the history charts' x-axis switch (step / time / time since the start) ------------

  // The steps or times of trace i (the server sends the one the trace is not drawn with).
  function xsOf(spec, i, which) {
    var alt = spec.alt[i] || {};
    if (alt[which]) { return alt[which]; }
    return spec.axis === which ? spec.figure.data[i].x : [];
  }

  // Relative time in the unit that fits the longest run: seconds, minutes or hours.
  function relativeUnit(spec) {
    var longest = 0;
    spec.alt.forEach(function (alt, i) {
      xsOf(spec, i, "time").forEach(function (t) { if (t - alt.t0 > longest) { longest = t - alt.t0; } });
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

  // The figure of a history chart drawn against `mode` ("step", "time" or "relative").
  function against(spec, mode) {
    var unit = mode === "relative" ? relativeUnit(spec) : null;
    var data = spec.figure.data.map(function (trace, i) {
      var alt = spec.alt[i];
      var copy = Object.assign({}, trace);
      if (!alt) { return copy; }
      if (mode === "step") { copy.x = xsOf(spec, i, "step"); }
      else if (mode === "time") { copy.x = inZone(xsOf(spec, i, "time")); }
      else { copy.x = xsOf(spec, i, "time").map(function (t) { return (t - alt.t0) / unit[0]; }); }
      return copy;
    });
    var title = mode === "time" ? "time (" + ZONE + ")" : TITLES[mode] + (unit ? " (" + unit[1] + ")" : "");
    var xaxis = { title: { text: title }, type: mode === "time" ? "date" : "linear" };
    return { data: data, layout: Object.assign({}, spec.figure.layout, { xaxis: xaxis }) };
  }

  function drawable(spec) {
    if (spec.kind !== "line" || !spec.alt) { return figureOf(spec); }
    var mode = axisMode === "auto" ? spec.axis : axisMode;
    if (mode !== "step" && spec.alt.some(function (alt, i) {
      return xsOf(spec, i, "time").length !== xsOf(spec, i, "step").length;
    })) {
      mode = "step"; // times unknown for some trace: only steps can be drawn
    }
    return mode === spec.axis && mode !== "time" ? spec.figure : against(spec, mode);
  }

  // --- drawing ---------------------------------------------------------------------------

  function showEmpty(target, spec) {
    if (target.getAttribute("data-drawn") === "1" && window.Plotly) { window.Plotly.purge(target); }
    target.classList.add("chart-empty");
    target.textContent = (spec && spec.message) || EMPTY;
    target.setAttribute("data-drawn", "empty");
    target.setAttribute("data-empty", "");
  }

  function plot(target) {
    var state = target._plinthChart;
    if (!state || !document.body.contains(target)) { return; }
    var figure = drawable(state.spec);
    if (target.getAttribute("data-drawn") === "1") {
      window.Plotly.react(target, figure.data, figure.layout, CONFIG);
      return;
    }
    target.classList.remove("chart-empty");
    target.removeAttribute("data-empty");
    target.textContent = "";
    target.setAttribute("data-drawn", "1");
    window.Plotly.newPlot(target, figure.data, figure.layout, CONFIG);
  }

  function drawNext() {
    var target = queue.shift();
    if (!target) { drawing = false; return; }
    plot(target);
    window.requestAnimationFrame(drawNext);
  }

  function enqueue(target) {
    if (queue.indexOf(target) >= 0) { return; }
    queue.push(target);
    if (drawing) { return; }
    drawing = true;
    loadPlotly().then(function () { window.requestAnimationFrame(drawNext); }, function () {
      drawing = false;
      queue.splice(0).forEach(function (t) { t.setAttribute("data-drawn", "failed"); });
    });
  }

  function nearScreen(target) {
    var box = target.getBoundingClientRect();
    if (!box.width && !box.height) { return false; } // hidden (e.g. a closed <details>)
    return box.top < window.innerHeight + 200 && box.bottom > -200;
  }

  function watch(target) {
    if (nearScreen(target) || !("IntersectionObserver" in window)) { enqueue(target); return; }
    if (!observer) {
      observer = new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          if (entry.isIntersecting) { observer.unobserve(entry.target); enqueue(entry.target); }
        });
      }, { rootMargin: "300px" });
    }
    observer.observe(target);
  }

  // Reads each chart's data; draws new charts, redraws ones whose data changed.
  function scan(root) {
    var found = [];
    if (root.matches && root.matches(".chart[data-chart]")) { found.push(root); }
    if (root.querySelectorAll) {
      found.push.apply(found, root.querySelectorAll(".chart[data-chart]"));
    }
    found.forEach(function (target) {
      var old = target.id && retired[target.id];
      if (old && old !== target) {
        // A polled fragment brought this chart again: keep the drawn plot (no flash of the
        // skeleton) and redraw it in place if its data changed.
        delete retired[target.id];
        old.setAttribute("data-chart", target.getAttribute("data-chart"));
        target.replaceWith(old);
        target = old;
      }
      var source = document.getElementById(target.getAttribute("data-chart"));
      if (!source) { return; }
      var text = source.textContent;
      var state = target._plinthChart;
      if (state && state.text === text) { return; }
      var spec;
      try { spec = JSON.parse(text); } catch (e) { spec = null; }
      target._plinthChart = { spec: spec, text: text };
      if (isEmpty(spec)) { showEmpty(target, spec); return; }
      if (target.getAttribute("data-drawn") === "1") { enqueue(target); return; }
      watch(target);
    });
    if (found.length) { loadPlotly().catch(function () { /* each chart says so */ }); }
  }

  function switchAxis(mode) {
    axisMode = mode;
    document.querySelectorAll(".chart[data-drawn='1']").forEach(function (target) {
      var state = target._plinthChart;
      if (state && state.spec && state.spec.kind === "line") { enqueue(target); }
    });
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input.matches && input.matches("[data-axis-switch] input[type=radio]") && input.checked) {
      switchAxis(input.value);
    }
  });

  function start() {
    var checked = document.querySelector("[data-axis-switch] input[type=radio]:checked");
    if (checked) { axisMode = checked.value; }
    scan(document);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
  // htmx: new content (htmx:load), and data replaced inside a chart that stays (afterSettle).
  document.addEventListener("htmx:load", function (event) { scan(event.target); });
  document.addEventListener("htmx:afterSettle", function () {
    scan(document);
    Object.keys(retired).forEach(function (id) {
      if (window.Plotly && !document.body.contains(retired[id])) { window.Plotly.purge(retired[id]); }
    });
    retired = {};
  });
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var target = event.target;
    if (target.id && target.getAttribute && target.getAttribute("data-drawn") === "1") { retired[target.id] = target; }
  });
})();

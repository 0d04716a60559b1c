// The one module that draws charts. A chart is a container
//   <div class="chart" data-chart="ID"></div>
// whose figure is in <script type="application/json" id="ID"> (Django's json_script). The
// JSON is either a Plotly figure {data, layout} or a chart of apps.tracking.charts
// {kind, figure, axis, alt, message}. The container shows a skeleton (CSS) until drawn.
//
// plotly.js is loaded on demand: each chart names the smallest official bundle that draws it
// (data-plotly-bundle: "basic" for scatter and bar, "cartesian" for heatmaps, "strict" for
// parcoords; apps.core.figures), and a bundle is loaded, once, when a chart that needs it is
// about to be drawn (the bundles are the data-plotly-bundles attribute of this script's tag,
// smallest first, each with its Subresource Integrity). A page of line charts thus parses
// 1.2 MB of plotly.js instead of 5.2 MB, and a parcoords at the bottom of a page loads the
// strict bundle only when it is scrolled near; a page without charts loads none. A chart
// keeps the Plotly that drew it. Charts near the screen draw at once, the others when they
// scroll near (IntersectionObserver), one per animation frame so a page of a hundred charts
// never freezes. Charts in htmx swaps are drawn when they arrive; when a
// swap replaces a drawn chart's data, the chart is redrawn in place (Plotly.react).
// An empty figure is a sentence, never an axis from -1 to 1. No inline script anywhere:
// the site sends Content-Security-Policy script-src 'self'.
(function () {
  "use strict";
  var CONFIG = { responsive: true, displaylogo: false };
  var EMPTY = "No data to plot yet.";
  var TITLES = { step: "step", time: "time (UTC)", relative: "time since the run started" };
  var me = document.currentScript;
  var BUNDLES = readBundles(); // [{name, src, integrity}], smallest first
  var loaded = []; // by a bundle's index in BUNDLES: its Plotly, once loaded
  var loading = []; // by index: the promise of a bundle being loaded
  var queue = []; // charts whose plotly.js is loaded, to draw one per animation frame
  var drawing = false;
  var observer = null;
  var retired = {}; // drawn charts an htmx swap is removing, by id: a chart with that id coming back reuses them
  var axisMode = "auto"; // "auto": each history chart's own x (step, or time when steps don't vary)

  // --- which plotly.js ----------------------------------------------------------------------

  function readBundles() {
    try {
      var list = JSON.parse((me && me.getAttribute("data-plotly-bundles")) || "[]");
      return Array.isArray(list) ? list : [];
    } catch (e) { return []; }
  }

  // The index of the bundle a chart needs; the largest when it names none or an unknown one.
  function rankOf(target) {
    var name = target.getAttribute("data-plotly-bundle");
    for (var i = 0; i < BUNDLES.length; i++) { if (BUNDLES[i].name === name) { return i; } }
    return BUNDLES.length - 1;
  }

  // Loads bundle `rank` once (a failed load is tried again next time); resolves to its Plotly.
  function load(rank) {
    if (loaded[rank]) { return Promise.resolve(loaded[rank]); }
    if (loading[rank]) { return loading[rank]; }
    var bundle = BUNDLES[rank];
    if (!bundle) { return Promise.reject(new Error("no plotly.js bundle is configured")); }
    loading[rank] = new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.src = bundle.src;
      if (bundle.integrity) { tag.integrity = bundle.integrity; }
      tag.async = true;
      tag.onload = function () {
        // Every bundle sets window.Plotly as it runs: this one's is the one there now.
        loading[rank] = null;
        if (window.Plotly) { loaded[rank] = window.Plotly; resolve(window.Plotly); } else { reject(new Error("plotly.js did not load")); }
      };
      tag.onerror = function () {
        loading[rank] = null;
        tag.remove();
        reject(new Error("plotly.js did not load"));
      };
      document.head.appendChild(tag);
    });
    return loading[rank];
  }

  // A loaded Plotly that draws the chart, as {rank, api}: the one that drew it when it still
  // can (its data may now need more), else the smallest loaded one that can; null if none.
  function loadedFor(target) {
    var need = rankOf(target);
    var drew = target._plinthPlotly;
    if (drew && drew.rank >= need) { return drew; }
    for (var rank = need; rank < BUNDLES.length; rank++) {
      if (loaded[rank]) { return { rank: rank, api: loaded[rank] }; }
    }
    return null;
  }

  function plotlyFor(target) {
    var found = loadedFor(target);
    if (found) { return Promise.resolve(found); }
    var rank = rankOf(target);
    return load(rank).then(function (api) { return { rank: rank, api: api }; });
  }

  function purge(target) {
    if (target._plinthPlotly) { target._plinthPlotly.api.purge(target); target._plinthPlotly = null; }
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
    purge(target);
    target.classList.add("chart-empty");
    target.textContent = (spec && spec.message) || EMPTY;
    target.setAttribute("data-drawn", "empty");
    target.setAttribute("data-empty", "");
  }

  function plot(target) {
    var state = target._plinthChart;
    if (!state || !document.body.contains(target)) { return; }
    var using = loadedFor(target);
    if (!using) { enqueue(target); return; } // new data that needs a larger bundle
    var figure = drawable(state.spec);
    if (target.getAttribute("data-drawn") === "1" && target._plinthPlotly === using) {
      using.api.react(target, figure.data, figure.layout, CONFIG);
      return;
    }
    purge(target); // drawn by a smaller bundle than its data now needs: drawn afresh
    target.classList.remove("chart-empty");
    target.removeAttribute("data-empty");
    target.textContent = "";
    target.setAttribute("data-drawn", "1");
    target._plinthPlotly = using;
    using.api.newPlot(target, figure.data, figure.layout, CONFIG);
  }

  function drawNext() {
    var target = queue.shift();
    if (!target) { drawing = false; return; }
    plot(target);
    window.requestAnimationFrame(drawNext);
  }

  // Draws the chart once its plotly.js is loaded (loading it if need be).
  function enqueue(target) {
    if (target._plinthWaiting || queue.indexOf(target) >= 0) { return; }
    target._plinthWaiting = true;
    plotlyFor(target).then(function () {
      target._plinthWaiting = false;
      queue.push(target);
      if (!drawing) { drawing = true; window.requestAnimationFrame(drawNext); }
    }, function () {
      target._plinthWaiting = false;
      purge(target);
      target.textContent = "";
      target.setAttribute("data-drawn", "failed");
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
    var first = null; // the first chart with something to draw
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
        if (target.hasAttribute("data-plotly-bundle")) {
          old.setAttribute("data-plotly-bundle", target.getAttribute("data-plotly-bundle"));
        } else {
          old.removeAttribute("data-plotly-bundle");
        }
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
      first = first || target;
      if (target.getAttribute("data-drawn") === "1") { enqueue(target); return; }
      watch(target);
    });
    // The first chart's plotly.js starts loading now (the page preloads it) even when the
    // chart is below the fold; larger bundles for charts further down wait for their chart.
    if (first) { plotlyFor(first).catch(function () { /* the chart says so when it is drawn */ }); }
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
      if (!document.body.contains(retired[id])) { purge(retired[id]); }
    });
    retired = {};
  });
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var target = event.target;
    if (target.id && target.getAttribute && target.getAttribute("data-drawn") === "1") { retired[target.id] = target; }
  });
})();

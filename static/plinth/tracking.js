// Run pages: draw the Plotly figures the server built (each chart only once it scrolls
// near the screen, one per animation frame, so a hundred runs never freeze the page),
// "select all on page" for the runs table, and the "only differences" toggle.
(function () {
  "use strict";
  var CONFIG = { responsive: true, displaylogo: false };
  var queue = [];
  var drawing = false;

  function drawNext() {
    var item = queue.shift();
    if (!item) { drawing = false; return; }
    if (window.Plotly && document.body.contains(item.target)) {
      window.Plotly.newPlot(item.target, item.figure.data, item.figure.layout, CONFIG);
      item.target.setAttribute("data-drawn", "1");
    }
    window.requestAnimationFrame(drawNext);
  }

  function enqueue(target, figure) {
    queue.push({ target: target, figure: figure });
    if (!drawing) { drawing = true; window.requestAnimationFrame(drawNext); }
  }

  function whenNear(target, figure) {
    if (!("IntersectionObserver" in window)) { enqueue(target, figure); return; }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { observer.disconnect(); enqueue(target, figure); }
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
        if (target) { whenNear(target, chart.figure); }
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
    document.body.addEventListener("htmx:afterSwap", function () { drawFigures(document); });
  });
})();

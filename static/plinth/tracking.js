// Run pages: "select all on page" for the runs table and the "only differences" toggle.
// Charts are drawn by plinth/charts.js.
(function () {
  "use strict";

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
    document.querySelectorAll("#compare-form").forEach(selection);
    document.querySelectorAll("[data-only-differences]").forEach(function (toggle) {
      var table = document.getElementById(toggle.getAttribute("data-only-differences"));
      toggle.addEventListener("change", function () {
        if (table) { table.classList.toggle("hide-same", toggle.checked); }
      });
    });
  });
})();

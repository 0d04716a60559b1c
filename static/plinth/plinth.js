// Plinth's own glue. htmx swaps 4xx responses too (they carry form errors); 5xx shows a banner.
document.addEventListener("DOMContentLoaded", function () {
  if (!window.htmx) { return; }
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "(400|403|404|409|422)", swap: true, error: false },
    { code: "[45]..", swap: false, error: true },
  ];
  document.body.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("messages");
    // An error page's htmx form (apps.core.pages.error_response) carries its own reason.
    if (box && event.detail.xhr.getResponseHeader("HX-Retarget") === "#messages") {
      box.innerHTML = event.detail.xhr.responseText;
      return;
    }
    if (box) {
      box.innerHTML = '<div class="flash flash-error" role="alert">The server could not complete that (' +
        event.detail.xhr.status + '). Reload the page and try again.</div>';
    }
  });
});
// A form with data-confirm="Question?" asks before it submits (no inline onsubmit handler:
// the site's Content-Security-Policy allows no inline script).
document.addEventListener("submit", function (event) {
  var form = event.target.closest ? event.target.closest("form[data-confirm]") : null;
  if (form && !window.confirm(form.getAttribute("data-confirm"))) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// Logs follow their tail: a [data-follow-tail] box (it needs an id) shows its last line when
// the page opens and after every htmx swap that replaces it, unless the reader had scrolled
// up in it: then it keeps their place.
(function () {
  var SLACK = 24; // px from the bottom that still count as "at the end"
  var kept = {};

  function boxes() { return document.querySelectorAll("[data-follow-tail]"); }
  function toEnd(box) { box.scrollTop = box.scrollHeight; }

  document.addEventListener("DOMContentLoaded", function () { boxes().forEach(toEnd); });
  document.addEventListener("htmx:beforeSwap", function () {
    kept = {};
    boxes().forEach(function (box) {
      if (!box.id) { return; }
      var atEnd = box.scrollHeight - box.scrollTop - box.clientHeight <= SLACK;
      kept[box.id] = atEnd ? null : box.scrollTop;
    });
  });
  document.addEventListener("htmx:afterSettle", function () {
    boxes().forEach(function (box) {
      var place = box.id ? kept[box.id] : undefined;
      if (typeof place === "number") { box.scrollTop = place; } else { toEnd(box); }
    });
  });
})();

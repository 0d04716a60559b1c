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
    if (box) {
      box.innerHTML = '<div class="flash flash-error" role="alert">The server could not complete that (' +
        event.detail.xhr.status + '). Reload the page and try again.</div>';
    }
  });
});

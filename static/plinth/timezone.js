// Tell the portal the browser's time zone (the account page can override it): a cookie
// the server checks against the IANA zone list (apps.core.timezones). No inline script.
(function () {
  var zone;
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
  if (!zone) return;
  var current = (document.cookie.match(/(?:^|;\s*)plinth_tz=([^;]*)/) || [])[1];
  if (current && decodeURIComponent(current) === zone) return;
  document.cookie = "plinth_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax" +
    (location.protocol === "https:" ? "; Secure" : "");
})();

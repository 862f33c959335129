// Keeps "5 minutes ago" true while a page stays open: every <time datetime> that shows a relative
// time is re-worded every 30 s from its datetime attribute (the server's words stay the fallback).
(function () {
  "use strict";
  var units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  function words(seconds) {
    if (seconds < 10) { return "now"; }
    for (var i = 0; i < units.length; i++) {
      var n = Math.floor(seconds / units[i][1]);
      if (n >= 1) { return n + " " + units[i][0] + (n === 1 ? "" : "s") + " ago"; }
    }
    return "now";
  }
  function refresh() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var text = el.textContent.trim();
      if (!/ ago$|^now$/.test(text)) { return; }
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at) && at <= now + 5000) { el.textContent = words(Math.max(0, (now - at) / 1000)); }
    });
  }
  setInterval(refresh, 30000);
  document.addEventListener("htmx:afterSwap", refresh);
})();

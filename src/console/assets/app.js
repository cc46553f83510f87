// cordon console: live updates. Pages work without this script; with it, a page whose body has
// data-live="1" listens to /ui/events and, when the server announces a change, fetches the same
// page again and swaps in its #live element (forms in it keep their CSRF token).
(function () {
  "use strict";
  if (!document.body || document.body.dataset.live !== "1" || !window.EventSource) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live"), here = document.getElementById("live");
        var active = document.activeElement;
        // Do not wipe what someone is typing in a comment box.
        if (fresh && here && !(active && active.tagName === "INPUT" && here.contains(active))) {
          here.replaceWith(document.importNode(fresh, true));
        }
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var es = new EventSource("/ui/events");
  // A change between this page's rendering and the stream's opening was not announced to it:
  // catch up once whenever the stream (re)opens.
  es.addEventListener("open", function () { refresh(); });
  es.addEventListener("change", refresh);
  es.addEventListener("resync", refresh);
})();

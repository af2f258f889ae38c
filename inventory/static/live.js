// Self-refresh without losing work: every `data-refresh` seconds the page is fetched again and its
// <main> and footer swapped in, unless a form is being filled (focus inside it, or typed in since
// load): then only the [data-live] parts that hold no form are swapped. While a command waits for a
// unit's answer ([data-pending]) it looks every second.
(function () {
  "use strict";
  var period = Number(document.body.getAttribute("data-refresh") || 0);
  if (!period) return;
  var dirty = false;
  document.addEventListener("input", function (e) { if (e.target && e.target.form) dirty = true; });
  document.addEventListener("submit", function () { dirty = false; });
  function busy() {
    var a = document.activeElement;
    return dirty || !!(a && (a.form || ["INPUT", "SELECT", "TEXTAREA"].indexOf(a.tagName) >= 0));
  }
  function swap(doc, selector) {
    var now = document.querySelector(selector), next = doc.querySelector(selector);
    if (now && next) now.replaceWith(next);
  }
  function schedule() {
    setTimeout(refresh, document.querySelector("[data-pending]") ? 1000 : period * 1000);
  }
  function refresh() {
    fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected && new URL(r.url).pathname === "/login") { location.href = r.url; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        if (!busy()) {
          swap(doc, "main"); swap(doc, "footer"); swap(doc, "header nav");
        } else {
          document.querySelectorAll("[data-live]").forEach(function (el) {
            var next = doc.getElementById(el.id);
            if (next && !el.querySelector("form")) el.replaceWith(next);
          });
        }
      })
      .catch(function () { /* the service is restarting: try again next period */ })
      .then(schedule);
  }
  schedule();
})();

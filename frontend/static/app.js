// llmbox admin UI: live panels and confirmations. No framework, no inline script (the CSP forbids it).
//
// <div data-refresh="/url" data-every="3000">: fetches the URL (an HTML fragment rendered by the
// same template as the page) and swaps the panel's content without reloading the page. A
// [data-refresh-every] element inside the fragment sets the next interval (fast while something
// moves). Refreshing pauses while the tab is hidden or a field in the panel has the focus, and
// keeps what the person changed in the panel's fields (e.g. an unticked box) across a swap.
// <form data-confirm="question">: asks before submitting.
(function () {
  "use strict";

  function status(text) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.hidden = !text;
    el.textContent = text || "";
  }

  function busy(panel) {
    var active = document.activeElement;
    return active && panel.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function fieldKey(el) {
    return (el.form ? el.form.getAttribute("action") : "") + "|" + el.name;
  }

  function changedFields(panel) {
    var changed = {};
    panel.querySelectorAll("input[name], textarea[name]").forEach(function (el) {
      if (el.type === "hidden") return;
      if (el.type === "checkbox" || el.type === "radio") {
        if (el.checked !== el.defaultChecked) changed[fieldKey(el)] = {checked: el.checked};
      } else if (el.value !== el.defaultValue) {
        changed[fieldKey(el)] = {value: el.value};
      }
    });
    return changed;
  }

  function restoreFields(panel, changed) {
    panel.querySelectorAll("input[name], textarea[name]").forEach(function (el) {
      var saved = changed[fieldKey(el)];
      if (!saved) return;
      if ("checked" in saved) el.checked = saved.checked; else el.value = saved.value;
    });
  }

  function refresh(panel) {
    if (document.hidden || busy(panel)) return Promise.resolve();
    return fetch(panel.dataset.refresh, {headers: {"X-Requested-With": "llmbox-ui"}, credentials: "same-origin",
                                         cache: "no-store"})
      .then(function (response) {
        if (response.status === 401) {
          status("Your session has ended: reload the page to log in again.");
          return;
        }
        return response.text().then(function (html) {
          var changed = changedFields(panel);
          panel.innerHTML = html;  // rendered and escaped by the server's templates
          restoreFields(panel, changed);
          status(response.ok ? "" : "The last refresh failed (HTTP " + response.status + "); retrying.");
        });
      })
      .catch(function () { status("The admin UI is not answering; retrying."); });
  }

  function schedule(panel) {
    var marker = panel.querySelector("[data-refresh-every]");
    var every = parseInt(marker ? marker.dataset.refreshEvery : panel.dataset.every, 10) || 3000;
    setTimeout(function () { refresh(panel).then(function () { schedule(panel); }); }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(schedule);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  }, true);
})();

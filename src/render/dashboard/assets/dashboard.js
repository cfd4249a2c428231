// sluice dashboard: sorting, filtering, language, theme, auto-refresh of the server-rendered
// fragments, and (with an admin token) releasing a penalty. No framework, no build step.
"use strict";
(function () {
  var I18N = JSON.parse(document.getElementById("i18n").textContent);
  var root = document.documentElement;
  var store = window.localStorage;

  // ?lang=zh / ?theme=dark (links, screenshots) are remembered like the switches.
  var params = new URLSearchParams(window.location.search);
  if (params.get("lang") === "zh" || params.get("lang") === "en") { store.setItem("sluice.lang", params.get("lang")); }
  if (params.get("theme") === "dark" || params.get("theme") === "light") { store.setItem("sluice.theme", params.get("theme")); }

  function lang() { return store.getItem("sluice.lang") || root.getAttribute("lang") || "en"; }
  function t(key) { var d = I18N[lang()] || I18N.en; return d[key] || I18N.en[key] || key; }
  function translate(scope) {
    (scope || document).querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.getAttribute("data-i18n"));
    });
    (scope || document).querySelectorAll("[data-i18n-placeholder]").forEach(function (el) {
      el.setAttribute("placeholder", t(el.getAttribute("data-i18n-placeholder")));
    });
    root.setAttribute("lang", lang());
  }
  function applyTheme() {
    var dark = store.getItem("sluice.theme") === "dark";
    root.classList.toggle("dark", dark);
    document.querySelectorAll("img[data-dark-src]").forEach(function (img) {
      img.src = dark ? img.getAttribute("data-dark-src") : img.getAttribute("data-light-src");
    });
  }

  // Sorting: click a header; numbers sort by data-sort when present.
  var sortState = { col: -1, dir: 1 };
  function key(row, col) {
    var cell = row.children[col];
    if (!cell) { return ""; }
    var s = cell.getAttribute("data-sort");
    return s !== null ? parseFloat(s) : cell.textContent.trim().toLowerCase();
  }
  function sortRows() {
    var body = document.querySelector("#instances tbody");
    if (!body || sortState.col < 0) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, sortState.col), y = key(b, sortState.col);
      return (x < y ? -1 : x > y ? 1 : 0) * sortState.dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    document.querySelectorAll("#instances th").forEach(function (th, i) {
      if (i === sortState.col) { th.setAttribute("data-dir", sortState.dir > 0 ? "asc" : "desc"); }
      else { th.removeAttribute("data-dir"); }
    });
  }
  function filterRows() {
    var box = document.getElementById("filter");
    var q = box ? box.value.trim().toLowerCase() : "";
    document.querySelectorAll("#instances tbody tr").forEach(function (r) {
      r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0;
    });
  }

  // Refresh: the server renders the fragments; swap them in without a reload. After an
  // action, `done` says what it did: shown once the fresh rows are in, so the "Updated"
  // note of that same refresh does not wipe it out before anyone could read it.
  function refresh(done) {
    var parts = document.querySelectorAll("[data-fragment]");
    if (!parts.length) { if (done) { note(done); } return; }
    var url = window.location.pathname + "?fragment=1" + (params.get("period") ? "&period=" + encodeURIComponent(params.get("period")) : "") + (params.get("rank") ? "&rank=" + encodeURIComponent(params.get("rank")) : "") + (params.get("at") ? "&at=" + encodeURIComponent(params.get("at")) : "");
    fetch(url, { headers: { "Accept": "text/html" } }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      parts.forEach(function (el) {
        var fresh = doc.querySelector("[data-fragment=\"" + el.getAttribute("data-fragment") + "\"]");
        if (fresh) { el.innerHTML = fresh.innerHTML; }
      });
      translate();
      sortRows();
      filterRows();
      note(done || t("refreshed") + " " + new Date().toLocaleTimeString());
    }).catch(function (e) { note(t("failed") + ": " + e.message); });
  }
  function note(text) { var n = document.getElementById("note"); if (n) { n.textContent = text; } }

  // Actions (admin): the token lives in this tab's session storage only.
  function token() { return window.sessionStorage.getItem("sluice.token") || ""; }
  function release(name) {
    if (!window.confirm(t("confirm_release") + "\n" + name)) { return; }
    fetch("/v1/interfaces/" + encodeURIComponent(name) + "/release", {
      method: "POST", headers: { "Authorization": "Bearer " + token() }
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error ? body.error.message : "HTTP " + r.status); }
        refresh(t("released") + ": " + name);
      });
    }).catch(function (e) { note(t("failed") + ": " + e.message); });
  }

  function reset(instance, period) {
    if (!window.confirm(t("confirm_reset") + "\n" + instance)) { return; }
    fetch("/v1/usage/reset", {
      method: "POST",
      headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: JSON.stringify({ instance: instance, resource: "traffic_total", period: period })
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error ? body.error.message : "HTTP " + r.status); }
        refresh(t("reset_done") + ": " + instance);
      });
    }).catch(function (e) { note(t("failed") + ": " + e.message); });
  }

  function resetRule(instance, rule) {
    if (!window.confirm(t("confirm_reset") + "\n" + instance + " · " + rule)) { return; }
    fetch("/v1/instances/" + encodeURIComponent(instance) + "/rules/" + encodeURIComponent(rule) + "/reset", {
      method: "POST", headers: { "Authorization": "Bearer " + token() }
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error ? body.error.message : "HTTP " + r.status); }
        refresh(t("reset_done") + ": " + instance + " · " + rule);
      });
    }).catch(function (e) { note(t("failed") + ": " + e.message); });
  }

  document.addEventListener("click", function (e) {
    var rr = e.target.closest("button[data-reset-rule]");
    if (rr) { resetRule(rr.getAttribute("data-instance"), rr.getAttribute("data-reset-rule")); return; }
    var rs = e.target.closest("button[data-reset]");
    if (rs) { reset(rs.getAttribute("data-reset"), rs.getAttribute("data-period")); return; }
    var th = e.target.closest("#instances th");
    if (th) {
      var col = Array.prototype.indexOf.call(th.parentNode.children, th);
      sortState = { col: col, dir: sortState.col === col ? -sortState.dir : 1 };
      sortRows();
      return;
    }
    var btn = e.target.closest("button[data-release]");
    if (btn) { release(btn.getAttribute("data-release")); return; }
    var by = e.target.closest(".switch button[data-by]");
    if (by) {
      document.querySelectorAll(".switch button").forEach(function (b) { b.setAttribute("aria-pressed", b === by ? "true" : "false"); });
      var img = document.getElementById("chart");
      var base = img.getAttribute("data-base") + "?by=" + by.getAttribute("data-by");
      img.setAttribute("data-light-src", base);
      img.setAttribute("data-dark-src", base + "&dark=1");
      applyTheme();
    }
  });
  var filter = document.getElementById("filter");
  if (filter) { filter.addEventListener("input", filterRows); }
  var themeBox = document.getElementById("theme");
  if (themeBox) {
    themeBox.checked = store.getItem("sluice.theme") === "dark";
    themeBox.addEventListener("change", function () {
      store.setItem("sluice.theme", themeBox.checked ? "dark" : "light");
      applyTheme();
    });
  }
  var langBtn = document.getElementById("lang");
  if (langBtn) {
    langBtn.addEventListener("click", function () {
      store.setItem("sluice.lang", lang() === "zh" ? "en" : "zh");
      translate();
    });
  }
  var tokenBox = document.getElementById("token");
  if (tokenBox) {
    tokenBox.value = token();
    tokenBox.addEventListener("change", function () {
      window.sessionStorage.setItem("sluice.token", tokenBox.value.trim());
      root.classList.toggle("admin", tokenBox.value.trim() !== "");
    });
    root.classList.toggle("admin", token() !== "");
  }
  // ?q=… fills the filter, ?sort=N&dir=asc|desc sorts by column N: shareable views.
  if (filter && params.get("q")) { filter.value = params.get("q"); }
  if (params.get("sort") !== null) {
    sortState = { col: parseInt(params.get("sort"), 10), dir: params.get("dir") === "desc" ? -1 : 1 };
  }
  sortRows();
  filterRows();
  var every = parseInt(root.getAttribute("data-refresh") || "0", 10);
  if (every > 0) { window.setInterval(refresh, every * 1000); }
  translate();
  applyTheme();
})();

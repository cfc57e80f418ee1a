/* shadowdns on-call dashboard: reads the REST API with a reader token, redraws every 2 s.
 * Loads nothing from elsewhere; charts are uPlot (vendored, MIT). */
(function () {
  "use strict";

  var FAST_MS = 2000;
  var SLOW_MS = 15000;
  var HISTORY_S = 1800;
  var TOKEN_KEY = "shadowdns-token";
  var token = null;
  var timer = null;
  var lastSlow = 0;
  var forecasts = [];
  var allocations = [];
  var forecastChart = null;
  var forecastKey = "";
  var kindsChart = null;
  var kindsKey = "";
  var KIND_COLORS = { shadow: "#2b6cb0", primary: "#1f9d55", fallback: "#d64545",
    nodata: "#c98a00", "static": "#6b7480", slow: "#9f7aea" };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "class") { node.className = attrs[k]; }
      else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(c); } });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function hhmmss(ts) {
    if (ts === null || ts === undefined) { return "-"; }
    return new Date(ts * 1000).toISOString().slice(11, 19);
  }

  function stamp(ts) {
    if (ts === null || ts === undefined) { return "-"; }
    return new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " ");
  }

  function AuthError(message) { this.message = message; }

  function readToken() {
    var match = window.location.hash.match(/token=([^&]+)/);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", window.location.pathname);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function api(path) {
    return fetch(path, { headers: { "Authorization": "Bearer " + token,
                                    "Accept": "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (r.status === 401 || r.status === 403) {
            throw new AuthError((body.error && body.error.message) || "not allowed");
          }
          if (!r.ok) {
            throw new Error(path + ": HTTP " + r.status + " " +
                            ((body.error && body.error.message) || ""));
          }
          return body;
        });
      });
  }

  function showLogin(message) {
    if (timer) { clearTimeout(timer); timer = null; }
    $("board").hidden = true;
    $("login").hidden = false;
    showError(message || "");
  }

  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message || "";
  }

  /* -- health ------------------------------------------------------------------------ */

  function historyStrip(resource, current, events, now) {
    var start = now - HISTORY_S;
    var mine = events.filter(function (e) { return e.resource === resource && e.ts >= start; });
    var strip = el("div", { "class": "history", title: "last 30 minutes" });
    var state = mine.length ? (mine[0].old || mine[0].new) : current;
    var t = start;
    mine.forEach(function (e) {
      if (e.ts > t) {
        strip.appendChild(el("span", { "class": state,
          style: "width:" + ((e.ts - t) / HISTORY_S * 100).toFixed(2) + "%" }));
      }
      state = e.new;
      t = Math.max(t, e.ts);
    });
    /* the state now stays visible even when it began a moment ago */
    strip.appendChild(el("span", { "class": current,
      style: "width:" + Math.max(3, (now - t) / HISTORY_S * 100).toFixed(2) + "%" }));
    return strip;
  }

  function renderHealth(resources, events, now) {
    var grid = $("health-grid");
    clear(grid);
    var down = 0;
    resources.forEach(function (r) {
      if (r.state === "down") { down += 1; }
      var badge = r.override !== "obey" ?
        el("span", { "class": "badge", text: "override " + r.override }) : null;
      var since = r.since ? "since " + hhmmss(r.since) : "no probe data";
      grid.appendChild(el("div", {
        "class": "card " + r.state, "data-resource": r.resource, "data-state": r.state,
        title: r.reason || ""
      }, [
        el("div", { "class": "name" }, [
          el("span", { text: r.resource }, [badge]),
          el("span", { "class": "state", text: r.state })
        ]),
        el("div", { "class": "meta", text: r.role + " · " + r.location + " · " +
          (r.address || r.address6 || "") }),
        el("div", { "class": "meta", text: (r.probe_state ? "probes: " + r.probe_state + ", " :
          "") + since }),
        historyStrip(r.resource, r.state, events, now)
      ]));
    });
    $("health-count").textContent = resources.length + " resources, " + down + " down";
    return down;
  }

  function renderEvents(events) {
    var body = $("events").tBodies[0];
    clear(body);
    var newest = events.slice(-100).reverse();
    if (!newest.length) {
      body.appendChild(el("tr", {}, [el("td", { colspan: "4", "class": "muted",
        text: "no state changes recorded yet" })]));
    }
    newest.forEach(function (e) {
      body.appendChild(el("tr", { "data-resource": e.resource }, [
        el("td", { text: stamp(e.ts) }),
        el("td", { text: e.resource }),
        el("td", { "class": e.new, text: (e.old || "?") + " → " + e.new }),
        el("td", { text: e.reason || "" })
      ]));
    });
  }

  /* -- shadows ----------------------------------------------------------------------- */

  function renderShadows(locations, active) {
    var body = $("shadows").tBodies[0];
    clear(body);
    var seen = {};
    var regions = [];
    locations.forEach(function (l) {
      if (!seen[l.name]) { seen[l.name] = l; regions.push(l.name); }
    });
    active.forEach(function (a) { if (!seen[a.region]) { seen[a.region] = null; regions.push(a.region); } });
    regions.forEach(function (region) {
      var loc = seen[region];
      var where = loc ? loc.config.lat.toFixed(1) + ", " + loc.config.lon.toFixed(1) +
        (loc.config.continent ? " (" + loc.config.continent + ")" : "") : "";
      var mine = active.filter(function (a) { return a.region === region; });
      var cell = el("td", {}, mine.length ? mine.map(function (a) {
        /* a problem (a warm-up hook that failed) shows in the chip, not only on hover */
        return el("span", { "class": "shadow " + a.state + (a.problem ? " problem" : ""),
          "data-problem": a.problem || "",
          title: (a.problem ? a.problem + "; " : "") + (a.pinned ? "pinned; " : "") +
            "since " + stamp(a.valid_from) + " " + a.reason,
          text: a.di.replace(/\.$/, "") + " ← " + a.resource +
            (a.state !== "ready" ? " (" + a.state + ")" : "") +
            (a.problem ? " — " + a.problem : "") });
      }) : [el("span", { "class": "muted", text: "primaries only" })]);
      body.appendChild(el("tr", { "data-region": region }, [
        el("td", { text: region }), el("td", { "class": "muted", text: where }), cell]));
    });
  }

  /* -- charts ------------------------------------------------------------------------ */

  function width(id) { return Math.max(300, $(id).clientWidth - 4); }

  function selectedSeries() {
    var s = $("series-select").value;
    return forecasts.filter(function (f) { return f.di + " " + f.region === s; })[0];
  }

  /* each shadow of the series as a shaded span from allocated to released (or now) */
  function spanPlugin() {
    return {
      hooks: {
        drawClear: [function (u) {
          var series = selectedSeries();
          if (!series) { return; }
          var ctx = u.ctx;
          var min = u.scales.x.min;
          var max = u.scales.x.max;
          ctx.save();
          series.allocations.forEach(function (a) {
            var from = Math.max(a.valid_from, min);
            var until = Math.min(a.valid_until === null ? Date.now() / 1000 : a.valid_until, max);
            if (until <= from) { return; }
            var x0 = u.valToPos(from, "x", true);
            var x1 = u.valToPos(until, "x", true);
            ctx.fillStyle = a.state === "ready" ? "rgba(31,157,85,0.12)" :
              a.state === "warming" ? "rgba(201,138,0,0.12)" : "rgba(107,116,128,0.10)";
            ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
            ctx.strokeStyle = "#1f9d55";
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(Math.round(x0), u.bbox.top);
            ctx.lineTo(Math.round(x0), u.bbox.top + u.bbox.height);
            ctx.stroke();
          });
          ctx.restore();
        }]
      }
    };
  }

  /* an allocation's reason is compact JSON ({"why": ..., "model": ..., ...}) */
  function reasonText(reason) {
    var r;
    try { r = JSON.parse(reason); } catch (e) { return reason || ""; }
    if (!r || typeof r !== "object") { return String(reason); }
    var parts = [r.why || "?"];
    if (r.model) { parts.push("model " + r.model); }
    if (typeof r.predicted === "number") { parts.push("predicted " + r.predicted.toFixed(1)); }
    if (typeof r.observed === "number") { parts.push("observed " + r.observed.toFixed(0)); }
    if (typeof r.p_cross === "number") { parts.push("P(cross) " + r.p_cross.toFixed(2)); }
    if (typeof r.threshold === "number") { parts.push("threshold " + r.threshold); }
    return parts.join(" · ");
  }

  function renderSpans(f) {
    var body = $("forecast-allocations").tBodies[0];
    clear(body);
    var rows = f ? f.allocations.slice().sort(function (a, b) { return b.valid_from - a.valid_from; }) : [];
    if (!rows.length) {
      body.appendChild(el("tr", {}, [el("td", { colspan: "4", "class": "muted",
        text: "no shadow allocated for this DI and region in this span" })]));
    }
    rows.forEach(function (a) {
      body.appendChild(el("tr", { "data-allocation": String(a.id), "data-state": a.state }, [
        el("td", { text: a.resource + (a.pinned ? " (pinned)" : "") }),
        el("td", { text: a.state }),
        el("td", { text: hhmmss(a.valid_from) + " – " +
          (a.valid_until === null ? "" : hhmmss(a.valid_until)) }),
        el("td", { "class": "reason", title: a.reason, text: reasonText(a.reason) })
      ]));
    });
  }

  function forecastData(f) {
    var xs = {};
    f.actual.forEach(function (p) { xs[p.ts] = true; });
    f.points.forEach(function (p) { xs[p.ts] = true; });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var actual = {}, point = {}, upper = {};
    f.actual.forEach(function (p) { actual[p.ts] = p.queries; });
    f.points.forEach(function (p) { point[p.ts] = p.point; upper[p.ts] = p.upper; });
    var lastActual = f.actual.length ? f.actual[f.actual.length - 1].ts : -Infinity;
    var threshold = f.threshold === null || f.threshold === undefined ? null : f.threshold;
    return [x,  /* a bucket with no row had no queries, up to the last one recorded */
      x.map(function (t) { return t in actual ? actual[t] : (t < lastActual ? 0 : null); }),
      x.map(function (t) { return t in point ? point[t] : null; }),
      x.map(function (t) { return t in upper ? upper[t] : null; }),
      x.map(function () { return threshold; })];
  }

  function renderForecast() {
    var select = $("series-select");
    var previous = select.value;
    var keys = forecasts.map(function (f) { return f.di + " " + f.region; });
    if (keys.join("|") !== forecastKey) {
      forecastKey = keys.join("|");
      clear(select);
      forecasts.forEach(function (f) {
        select.appendChild(el("option", { value: f.di + " " + f.region,
          text: f.di.replace(/\.$/, "") + " · " + f.region }));
      });
      if (keys.indexOf(previous) >= 0) { select.value = previous; }
      select.hidden = !keys.length;
    }
    var f = selectedSeries();
    var box = $("forecast-chart");
    renderSpans(f);
    if (!f || (!f.actual.length && !f.points.length)) {
      if (forecastChart) { forecastChart.destroy(); forecastChart = null; }
      clear(box);
      box.appendChild(el("p", { "class": "muted", text: "no demand or forecast recorded yet" }));
      $("forecast-info").textContent = "";
      return;
    }
    $("forecast-info").textContent = "model in use: " + (f.model || "-") +
      (f.threshold !== null ? " · threshold " + f.threshold : "") +
      (f.model_error !== null ? " · backtest error " + f.model_error.toFixed(3) : "") +
      (f.recent_error !== null ? " · recent error " + f.recent_error.toFixed(1) : "");
    var data = forecastData(f);
    if (forecastChart) { forecastChart.setData(data); return; }
    clear(box);
    forecastChart = new uPlot({
      width: width("forecast-chart"), height: 260,
      series: [{},
        { label: "actual", stroke: "#1d232b", width: 2 },
        { label: "forecast", stroke: "#2b6cb0", dash: [6, 4], width: 2,
          points: { show: false } },
        { label: "upper", stroke: "rgba(43,108,176,0.4)", width: 1, points: { show: false } },
        { label: "threshold", stroke: "#d64545", dash: [2, 3], width: 1,
          points: { show: false } }],
      bands: [{ series: [3, 2], fill: "rgba(43,108,176,0.15)" }],
      axes: [{}, { label: "queries per bucket" }],
      plugins: [spanPlugin()]
    }, data, box);
  }

  function renderKinds(k) {
    var box = $("kinds-chart");
    var kinds = {};
    k.points.forEach(function (p) { Object.keys(p.rates).forEach(function (n) { kinds[n] = true; }); });
    var names = Object.keys(kinds).sort();
    if (!k.points.length || !names.length) {
      if (kindsChart) { kindsChart.destroy(); kindsChart = null; kindsKey = ""; }
      clear(box);
      box.appendChild(el("p", { "class": "muted", text: "collecting (a point every " +
        k.interval + " s)…" }));
      return;
    }
    var data = [k.points.map(function (p) { return p.ts; })];
    names.forEach(function (n) {
      data.push(k.points.map(function (p) { return n in p.rates ? p.rates[n] : 0; }));
    });
    if (kindsChart && kindsKey === names.join("|")) { kindsChart.setData(data); return; }
    if (kindsChart) { kindsChart.destroy(); }
    kindsKey = names.join("|");
    clear(box);
    kindsChart = new uPlot({
      width: width("kinds-chart"), height: 240,
      series: [{}].concat(names.map(function (n) {
        return { label: n, stroke: KIND_COLORS[n] || "#333", width: 2 };
      })),
      axes: [{}, { label: "queries/s" }]
    }, data, box);
  }

  /* -- refresh loop ------------------------------------------------------------------- */

  function refresh() {
    var now = Date.now() / 1000;
    var slow = now * 1000 - lastSlow > SLOW_MS;
    var wanted = [api("/api/v1/health"), api("/api/v1/health/events?limit=500"),
      api("/api/v1/allocations"), api("/api/v1/locations"),
      api("/api/v1/allocations/generation"), api("/api/v1/traffic/kinds"),
      slow ? api("/api/v1/forecasts?hours=6") : Promise.resolve(null)];
    return Promise.all(wanted).then(function (r) {
      showError("");
      var down = renderHealth(r[0], r[1], now);
      renderEvents(r[1]);
      allocations = r[2];
      renderShadows(r[3], allocations);
      $("generation").textContent = r[4].generation;
      renderKinds(r[5]);
      if (r[6] !== null) { forecasts = r[6]; lastSlow = now * 1000; renderForecast(); }
      $("summary").textContent = r[0].length + " resources · " + down + " down · " +
        allocations.length + " active allocations";
      $("updated").textContent = "updated " + hhmmss(now) + " UTC";
    }).catch(function (err) {
      if (err instanceof AuthError) { showLogin(err.message); throw err; }
      showError("cannot refresh: " + err.message);
    });
  }

  function loop() {
    refresh().then(function () { timer = setTimeout(loop, FAST_MS); },
                   function () { /* signed out */ });
  }

  function start() {
    token = readToken();
    if (!token) { showLogin(""); return; }
    $("login").hidden = true;
    $("board").hidden = false;
    lastSlow = 0;
    loop();
  }

  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    start();
  });
  $("logout").addEventListener("click", function () {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  $("series-select").addEventListener("change", function () {
    if (forecastChart) { forecastChart.destroy(); forecastChart = null; }
    renderForecast();
  });
  window.addEventListener("resize", function () {
    if (forecastChart) { forecastChart.setSize({ width: width("forecast-chart"), height: 260 }); }
    if (kindsChart) { kindsChart.setSize({ width: width("kinds-chart"), height: 240 }); }
  });
  start();
}());

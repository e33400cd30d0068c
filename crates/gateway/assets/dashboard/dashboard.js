// The product managers' dashboard: plain DOM, no framework, no build step.
//
// Safety rules kept throughout: every value from the API or the user reaches the page through
// textContent / DOM nodes (never innerHTML); the API key lives in sessionStorage only (gone
// when the tab closes; never localStorage, a cookie or a URL); errors are shown on the page,
// never written to the console.
"use strict";

(() => {
  const KEY = "kyc-gateway.api-key";
  const DAY = 86400;
  const MAX_CHART_DAYS = 92;
  const PARALLEL = 6; // per-day requests in flight; the tenant's rate limit applies to them
  const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b"];
  const $ = (id) => document.getElementById(id);
  const charts = [];

  // ---- formatting -------------------------------------------------------------------------

  const DASH = "–";
  const count = (v) => String(v);
  const pct = (v) => (v * 100).toFixed(1) + " %";
  const pp = (v) => (v >= 0 ? "+" : "") + (v * 100).toFixed(1) + " pp";
  const seconds = (v) =>
    v < 120 ? v.toFixed(1) + " s" : v < 7200 ? (v / 60).toFixed(1) + " min" : (v / 3600).toFixed(1) + " h";
  const money = (v, group) => v.toFixed(2) + (group && group.cost ? " " + group.cost.currency : "");
  const pick = (obj, path) => path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
  const dayOf = (ts) => new Date(ts * 1000).toISOString().slice(0, 10);

  /** An element with attributes (null ones skipped) and children (strings become text). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value != null) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child != null) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** A table cell for `value` (a number or absent), readable by tests through its attributes. */
  function figure(tag, value, format, group, attrs) {
    const known = typeof value === "number" && Number.isFinite(value);
    return el(tag, { ...attrs, "data-value": known ? String(value) : null }, known ? format(value, group) : DASH);
  }

  /** A table in a box of its own that scrolls sideways when the screen is narrower (a phone). */
  function table(className, head, rows) {
    return el("div", { class: "scroll" }, el("table", { class: className },
      el("thead", {}, el("tr", {}, ...head.map((h) => (h instanceof Node ? h : el("th", { scope: "col" }, h))))),
      el("tbody", {}, ...rows)));
  }

  function say(target, text, className) {
    target.replaceChildren(el("p", { class: className || "note", "data-field": "message" }, text));
  }

  // ---- the API ----------------------------------------------------------------------------

  /** A problem answer (RFC 9457): `message` is its `detail`. */
  class Problem extends Error {
    constructor(status, detail, field) {
      super(field ? `${field}: ${detail}` : detail);
      this.status = status;
      this.field = field || null;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Calls the API with the stored key; answers the JSON body or throws a Problem. */
  async function api(path, body) {
    const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY), Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
      if (response.status === 429 && attempt < 3) {
        await sleep(Math.min(Number(response.headers.get("Retry-After")) || 1, 10) * 1000);
        continue;
      }
      const answer = await response.json().catch(() => null);
      if (response.ok) return answer;
      const detail = answer && typeof answer.detail === "string" ? answer.detail : "HTTP " + response.status;
      const field = answer && typeof answer.field === "string" ? answer.field : null;
      throw new Problem(response.status, detail, field);
    }
  }

  /** What to tell the reader about a failed call. */
  function reason(error) {
    return error instanceof Problem ? error.message : "the gateway could not be reached";
  }

  /** Runs `work` on each item, `PARALLEL` at a time; answers the results in order. */
  async function inParallel(items, work) {
    const results = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await work(items[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
    return results;
  }

  const statsPath = (from, to, by) =>
    `v1/stats?from=${from}T00:00:00Z&to=${to}T00:00:00Z&group_by=${encodeURIComponent(by)}`;

  // ---- provider comparison ----------------------------------------------------------------

  const FIELDS = [
    ["started", "Started", count],
    ["finished.approved", "Approved", count],
    ["finished.rejected", "Rejected", count],
    ["finished.expired", "Expired", count],
    ["finished.abandoned", "Abandoned", count],
    ["finished.cancelled", "Cancelled", count],
    ["approval_rate", "Approval rate (approved ÷ decided)", pct],
    ["completion_rate", "Completion rate (finished ÷ started)", pct],
    ["conversion", "Conversion (approved ÷ started)", pct],
    ["abandonment_rate", "Abandonment rate", pct],
    ["expiry_rate", "Expiry rate", pct],
    ["time_to_decision_s.p50", "Time to decision, median", seconds],
    ["time_to_decision_s.p90", "Time to decision, 90th percentile", seconds],
    ["fallbacks", "Taken as fallback", count],
    ["provider_errors", "Provider errors", count],
    ["circuit_open_s", "Circuit open", seconds],
    ["cost.per_started", "Cost per started", money],
    ["cost.per_approved", "Cost per approved", money],
  ];

  // ---- the summary that decides -----------------------------------------------------------

  /** Provider errors per call tried: errors ÷ (started + errors). */
  const errorRate = (g) => (g.started + g.provider_errors > 0 ? g.provider_errors / (g.started + g.provider_errors) : undefined);

  /** The summary's figures: which is better, and how each reads. */
  const CARDS = [
    { field: "approval_rate", label: "Approval rate", value: (g) => g.approval_rate, better: "high", format: pct },
    { field: "time_to_decision_s.p50", label: "Median time to decision", value: (g) => pick(g, "time_to_decision_s.p50"), better: "low", format: seconds },
    { field: "cost.per_approved", label: "Cost per approved", value: (g) => pick(g, "cost.per_approved"), better: "low", format: money },
    { field: "error_rate", label: "Provider error rate", value: errorRate, better: "low", format: pct },
    { field: "started", label: "Volume (started)", value: (g) => g.started, better: null, format: count },
  ];

  /** Whether two groups' approval-rate intervals overlap: a difference too small to trust. */
  const overlap = (a, b) => !a.approval_ci || !b.approval_ci ||
    (a.approval_ci[0] <= b.approval_ci[1] && b.approval_ci[0] <= a.approval_ci[1]);

  /** One sentence comparing the best approver with the next, in the page's words. */
  function sentence(groups) {
    const rated = groups.filter((g) => typeof g.approval_rate === "number");
    if (rated.length < 2) return "Only one provider decided verifications in this period: nothing to compare yet.";
    const [best, next] = [...rated].sort((a, b) => b.approval_rate - a.approval_rate);
    if (overlap(best, next)) {
      return `${best.provider} and ${next.provider} approve alike so far (${pct(best.approval_rate)} and ` +
        `${pct(next.approval_rate)}; their 95 % intervals overlap): too close to call on approvals.`;
    }
    const parts = [`approves ${((best.approval_rate - next.approval_rate) * 100).toFixed(1)} points more`];
    const [tb, tn] = [pick(best, "time_to_decision_s.p50"), pick(next, "time_to_decision_s.p50")];
    if (typeof tb === "number" && typeof tn === "number") {
      parts.push(`is ${seconds(Math.abs(tn - tb))} ${tb <= tn ? "faster" : "slower"}`);
    }
    const [cb, cn] = [pick(best, "cost.per_approved"), pick(next, "cost.per_approved")];
    if (typeof cb === "number" && typeof cn === "number" && best.cost.currency === next.cost.currency) {
      parts.push(`${money(Math.abs(cn - cb), best)} ${cb <= cn ? "cheaper" : "dearer"} per approval`);
    }
    const listed = parts.length > 1 ? `${parts.slice(0, -1).join(", ")} and ${parts[parts.length - 1]}` : parts[0];
    let text = `${best.provider} ${listed} than ${next.provider}`;
    const errors = best.provider_errors;
    if (errors > 0) {
      text += `; its ${errors} provider error${errors === 1 ? "" : "s"} sent verifications elsewhere` +
        (next.fallbacks > 0 ? ` (${next.provider} took ${next.fallbacks} as fallbacks)` : "");
    }
    return text + ".";
  }

  function renderSummary(stats) {
    const target = $("summary");
    const groups = stats.groups;
    if (groups.length === 0) return say(target, "No verifications in this period.");
    const best = {};
    for (const card of CARDS.filter((c) => c.better)) {
      const values = groups.map(card.value).filter((v) => typeof v === "number");
      if (values.length > 1) best[card.field] = card.better === "high" ? Math.max(...values) : Math.min(...values);
    }
    const cards = groups.map((g) => el("div", { class: "card", "data-provider": g.provider },
      el("h3", {}, g.provider),
      el("dl", {}, ...CARDS.flatMap((card) => {
        const v = card.value(g);
        const isBest = typeof v === "number" && best[card.field] === v;
        const diff = typeof v === "number" && card.field in best && !isBest
          ? ` (${card.format === pct ? pp(v - best[card.field]) : (v > best[card.field] ? "+" : "−") + card.format(Math.abs(v - best[card.field]), g)})`
          : "";
        return [el("dt", {}, card.label),
          el("dd", { "data-field": card.field, "data-value": typeof v === "number" ? String(v) : null, "data-best": isBest ? "true" : null },
            typeof v === "number" ? card.format(v, g) + (isBest ? " ★ best" : diff) : DASH)];
      }))));
    target.replaceChildren(
      el("p", { class: "verdict", "data-field": "sentence" }, sentence(groups)),
      el("div", { class: "cards" }, ...cards));
  }

  function renderComparison(stats) {
    const target = $("comparison");
    if (stats.groups.length === 0) {
      say(target, `No verifications started from ${stats.from} to ${stats.to}.`);
    } else {
      const head = ["Figure", ...stats.groups.map((g) => el("th", { scope: "col", "data-provider": g.provider }, g.provider))];
      const rows = FIELDS.map(([field, label, format]) =>
        el("tr", {}, el("th", { scope: "row" }, label),
          ...stats.groups.map((g) =>
            figure("td", pick(g, field), format, g, { "data-provider": g.provider, "data-field": field }))));
      const csv = [["figure", ...stats.groups.map((g) => g.provider)],
        ...FIELDS.map(([field, label]) => [label, ...stats.groups.map((g) => {
          const v = pick(g, field);
          return typeof v === "number" ? String(v) : "";
        })])]
        .map((line) => line.map((cell) => `"${String(cell).replace(/"/g, '""')}"`).join(","))
        .join("\r\n");
      const download = el("a", {
        "data-field": "csv",
        download: `comparison-${stats.from}-to-${stats.to}.csv`,
        href: "data:text/csv;charset=utf-8," + encodeURIComponent(csv + "\r\n"),
      }, "Download this comparison as CSV");
      target.replaceChildren(table("figures", head, rows), el("p", {}, download),
        el("p", { class: "note", "data-field": "definitions" },
          "Decided: approved or rejected by the provider. Finished: decided, expired, abandoned or " +
          "cancelled. Approval rate = approved ÷ decided; completion rate = finished ÷ started; " +
          "conversion = approved ÷ started. Each verification counts on the day it started."));
    }
  }

  function renderCountries(stats) {
    const target = $("by-country");
    if (stats.groups.length === 0) return say(target, "No verifications in this period.");
    const columns = [
      ["started", "Started", count],
      ["finished.approved", "Approved", count],
      ["finished.rejected", "Rejected", count],
      ["approval_rate", "Approval rate", pct],
      ["conversion", "Conversion", pct],
      ["time_to_decision_s.p50", "Median time", seconds],
      ["cost.per_approved", "Cost per approved", money],
    ];
    const rows = stats.groups.map((g) => {
      const key = { "data-provider": g.provider, "data-country": g.country };
      return el("tr", {},
        el("td", { ...key, "data-field": "provider" }, g.provider),
        el("td", { ...key, "data-field": "country" }, g.country || "(not recorded)"),
        ...columns.map(([field, , format]) => figure("td", pick(g, field), format, g, { ...key, "data-field": field })));
    });
    target.replaceChildren(table("figures", ["Provider", "Country", ...columns.map((c) => c[1])], rows));
  }

  // ---- charts per day ---------------------------------------------------------------------

  /** A day's figure is drawn with a dot only when at least this many verifications are behind it. */
  const MIN_DAY_SAMPLE = 30;

  /** Tick steps for counts: whole numbers only. */
  const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
  const whole = (v) => String(Math.round(v));
  const percentTicks = (v) => (Number.isInteger(Math.round(v * 1000) / 10) ? (v * 100).toFixed(0) : (v * 100).toFixed(1)) + " %";

  /** Time ticks in one unit, chosen by the chart's top: round steps in seconds, minutes or hours. */
  function timeAxis(top) {
    const [factor, unit] = top < 120 ? [1, "s"] : top < 7200 ? [60, "min"] : [3600, "h"];
    const steps = [0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 240, 480].map((x) => x * factor);
    const label = (t) => {
      const v = t / factor;
      return (Number.isInteger(v) ? String(v) : v.toFixed(1)) + " " + unit;
    };
    return { steps, label };
  }

  // Each chart: what it shows per provider and day, and `n`, how many verifications are behind
  // that figure (shown on hover; a day under MIN_DAY_SAMPLE gets no dot).
  const CHARTS = [
    { id: "started", title: "Verifications started", bars: true, value: (g) => (g ? g.started : 0), format: count, whole: true },
    { id: "approval_rate", title: "Approval rate (approved ÷ decided)", value: (g) => g && g.approval_rate, format: pct, max: 1,
      n: (g) => (g ? g.finished.approved + g.finished.rejected : 0), unit: "decided" },
    { id: "time_to_decision_p50", title: "Time to decision, median", value: (g) => pick(g, "time_to_decision_s.p50"), format: seconds, time: true,
      n: (g) => (g ? g.finished.approved + g.finished.rejected + g.finished.expired + g.finished.abandoned + g.finished.cancelled : 0), unit: "finished" },
    { id: "provider_errors", title: "Provider errors", bars: true, value: (g) => (g ? g.provider_errors : 0), format: count, whole: true },
    { id: "cost_per_approved", title: "Cost per approved", value: (g) => pick(g, "cost.per_approved"), format: (v) => v.toFixed(2),
      n: (g) => (g ? g.finished.approved : 0), unit: "approved" },
  ];

  function days(from, to) {
    const all = [];
    for (let t = Date.parse(from + "T00:00:00Z"); t <= Date.parse(to + "T00:00:00Z"); t += DAY * 1000) {
      all.push(new Date(t).toISOString().slice(0, 10));
    }
    return all;
  }

  /** Side-by-side bars: each provider's bar takes its share of 80 % of the day. */
  function groupedBars(index, of) {
    const width = (0.8 * DAY) / of;
    return uPlot.paths.bars({
      disp: {
        x0: { unit: 1, values: (u) => u.data[0].map((x) => x - 0.4 * DAY + index * width) },
        size: { unit: 1, values: () => [width] },
      },
    });
  }

  /** The y axis of a chart: whole-number, percent or one-unit time ticks; the labels drawn are
   *  kept on the chart's figure (`data-y-ticks`) for a reader of the page's text. */
  function yAxis(spec, top, box) {
    const time = spec.time ? timeAxis(top) : null;
    const label = time ? time.label : spec.whole ? whole : spec.max === 1 ? percentTicks : spec.format;
    return {
      size: 70,
      incrs: time ? time.steps : spec.whole ? WHOLE : undefined,
      values: (u, ticks) => {
        const labels = ticks.map(label);
        box.dataset.yTicks = JSON.stringify(labels);
        return labels;
      },
    };
  }

  function drawChart(spec, xs, providers, series, samples, partial, into) {
    const box = el("figure", { class: "chart", "data-chart": spec.id, "data-kind": spec.bars ? "bars" : "line" },
      el("figcaption", {}, spec.title));
    into.append(box);
    const known = series.flat().filter((v) => v != null);
    if (known.length === 0) box.append(el("p", { class: "note" }, "No figures for this period."));
    const top = spec.max || Math.max(1, ...known) * 1.1;
    const partialAt = partial ? xs[xs.length - 1] : null;
    if (partial) box.dataset.partialDay = dayOf(partialAt);
    const chart = new uPlot({
      width: Math.max(320, into.clientWidth - 16),
      height: 220,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: {
        x: { time: true, range: (u, min, max) => [min - DAY / 2, max + DAY / 2] },
        y: { range: () => [0, top] },
      },
      axes: [
        { incrs: [DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY],
          values: (u, ticks) => ticks.map((t) => (t === partialAt ? "today" : dayOf(t).slice(5))) },
        yAxis(spec, top, box),
      ],
      // Today, not over yet, on a grey ground.
      hooks: partial ? {
        drawClear: [(u) => {
          const left = u.valToPos(partialAt - DAY / 2, "x", true);
          const right = u.valToPos(partialAt + DAY / 2, "x", true);
          u.ctx.save();
          u.ctx.fillStyle = "rgba(113, 128, 150, 0.15)";
          u.ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
          u.ctx.restore();
        }],
      } : {},
      series: [
        { label: "Day", value: (u, ts) => (ts == null ? "" : dayOf(ts) + (ts === partialAt ? " (so far)" : "")) },
        ...providers.map((provider, i) => ({
          label: provider,
          stroke: COLORS[i % COLORS.length],
          fill: spec.bars ? COLORS[i % COLORS.length] : undefined,
          width: spec.bars ? 1 : 2,
          paths: spec.bars ? groupedBars(i, providers.length) : undefined,
          points: spec.bars ? { show: false } : {
            show: true,
            filter: () => samples[i].flatMap((n, day) => (n >= MIN_DAY_SAMPLE ? [day] : [])),
          },
          value: (u, v, seriesIdx, day) => {
            if (day == null) return "";
            if (v == null) return "no data";
            return spec.format(v) + (spec.n ? ` (n = ${samples[i][day]} ${spec.unit})` : "");
          },
        })),
      ],
    }, [xs, ...series], box);
    box.uplot = chart;
    const notes = [];
    if (spec.n) notes.push(`A dot marks a day with at least ${MIN_DAY_SAMPLE} ${spec.unit}; hover a day for its n.`);
    if (partial) notes.push("The grey day is today, not over yet.");
    if (notes.length) box.append(el("p", { class: "note", "data-field": "chart-note" }, notes.join(" ")));
    charts.push(chart);
  }

  async function loadCharts(from, to) {
    const target = $("charts");
    let all = days(from, to);
    $("charts-note").textContent = all.length > MAX_CHART_DAYS
      ? `The period is longer than ${MAX_CHART_DAYS} days: these charts show its last ${MAX_CHART_DAYS}.`
      : "";
    all = all.slice(-MAX_CHART_DAYS);
    const perDay = await inParallel(all, (day) => api(statsPath(day, day, "provider")));
    const providers = [...new Set(perDay.flatMap((s) => s.groups.map((g) => g.provider)))].sort();
    const xs = all.map((day) => Date.parse(day + "T00:00:00Z") / 1000);
    const partial = all[all.length - 1] === new Date().toISOString().slice(0, 10);
    charts.splice(0).forEach((c) => c.destroy());
    target.replaceChildren();
    for (const spec of CHARTS) {
      const of = (p) => perDay.map((s) => s.groups.find((g) => g.provider === p));
      const series = providers.map((p) => of(p).map((g) => spec.value(g) ?? null));
      const samples = providers.map((p) => of(p).map((g) => (spec.n ? spec.n(g) : MIN_DAY_SAMPLE)));
      drawChart(spec, xs, providers, series, samples, partial, target);
    }
  }

  window.addEventListener("resize", () => {
    for (const chart of charts) chart.setSize({ width: Math.max(320, $("charts").clientWidth - 16), height: 220 });
  });

  // ---- adaptive routing -------------------------------------------------------------------

  function renderAllocation(stats) {
    const target = $("allocation");
    const a = stats.allocation;
    if (!a) return say(target, "No adaptive routing (optimize) in this tenant's routing.");
    const names = a.now.instances.map((i) => i.provider);
    const setup = el("p", {},
      `${(a.now.countries || []).join(", ") || "All countries"}: new subjects shared among ${names.join(", ")} `,
      `by approvals per cost, each between ${a.now.min_share} % and ${a.now.max_share} %; outcomes read at `,
      `${a.now.horizon} old, from the verifications started ${a.now.evidence_since.slice(0, 10)} to `,
      `${a.now.evidence_until.slice(0, 10)}.`);
    const rows = a.now.instances.map((i) =>
      el("tr", { "data-provider": i.provider },
        el("th", { scope: "row" }, i.provider),
        figure("td", i.share / 100, pct, null, { "data-field": "share" }),
        figure("td", i.best_probability / 100, pct, null, { "data-field": "best_probability" }),
        figure("td", i.started, count, null, { "data-field": "started" }),
        figure("td", i.approved, count, null, { "data-field": "approved" }),
        figure("td", i.provider_errors, count, null, { "data-field": "provider_errors" }),
        figure("td", i.approval_rate, pct, null, { "data-field": "approval_rate" }),
        el("td", { "data-field": "price" }, `${i.price.toFixed(2)} ${i.currency}`),
        figure("td", i.approvals_per_cost, (v) => v.toFixed(3), null, { "data-field": "approvals_per_cost" })));
    const days = a.days.map((d) => {
      const total = names.reduce((sum, n) => sum + (d.started[n] || 0), 0);
      return el("tr", { "data-day": d.day },
        el("th", { scope: "row" }, d.day),
        ...names.map((n) => el("td", { "data-provider": n, "data-value": String(d.started[n] || 0) },
          `${d.started[n] || 0} (${total ? pct((d.started[n] || 0) / total) : DASH})`)));
    });
    target.replaceChildren(setup,
      table("shares", ["Instance", "Share now", "Chance it is the best", "Started", "Approved by the horizon",
        "Provider errors", "Approval rate (estimate)", "Price", "Approvals per unit"], rows),
      el("h3", {}, "Started per day in these countries (share of the day)"),
      days.length ? table("days", ["Day", ...names], days) : el("p", { class: "note" }, "None in the period."));
  }

  // ---- experiment -------------------------------------------------------------------------

  const VERDICTS = {
    collecting: "collecting (too few verifications to tell yet)",
    no_difference: "no difference",
    challenger_better: "the challenger is better",
    champion_better: "the champion is better",
  };

  // What a verdict means, in the words of docs/policy.md ("Comparing providers").
  const READINGS = {
    collecting: "Each arm needs its minimum sample before the figures say anything.",
    no_difference: "Not shown different so far: the longer it runs, the smaller a difference it can find " +
      "(about 300 to 500 verifications an arm find a 10-point difference, about 2,000 a 5-point one).",
    challenger_better: "You may act on this now: the test stays valid however often you look, and when the " +
      "arms do not really differ it says so in fewer than 5 experiments out of 100.",
    champion_better: "You may act on this now: the test stays valid however often you look, and when the " +
      "arms do not really differ it says so in fewer than 5 experiments out of 100.",
  };

  const METRICS = {
    approval_rate: "approval rate (approved ÷ decided)",
    conversion: "conversion (approved ÷ started)",
  };
  const points = (v) => (v >= 0 ? "+" : "−") + Math.abs(v * 100).toFixed(1) + " points";

  /** The policy edit that acts on a verdict, in TOML as the policy file has it. */
  function nextStep(running, verdict) {
    const countries = running.countries || [];
    const promote = countries.length
      ? `add ${countries.map((c) => `{ country = "${c}", provider = "${running.challenger}" }`).join(", ")} to \`rules\``
      : `set \`default = "${running.challenger}"\``;
    switch (verdict) {
      case "challenger_better":
        return `To promote ${running.challenger}: in the tenant's routing, ${promote}, and remove the \`experiment\` line.`;
      case "champion_better":
        return `To end it: remove the \`experiment\` line from the tenant's routing; ${running.champion} keeps these subjects.`;
      case "no_difference":
        return "Keep it running to find a smaller difference, or end it (remove the `experiment` line) if this one is enough.";
      default:
        return `Wait: each arm needs ${running.min_sample} verifications counted before a verdict.`;
    }
  }

  async function loadExperiment(routing) {
    const target = $("experiment");
    const running = routing && routing.experiment;
    if (!running) return say(target, "No experiment running.");
    const metric = METRICS[running.metric] || String(running.metric).replace(/_/g, " ");
    const horizon = running.horizon || "48h";
    const setup = el("p", {},
      `${running.name}: ${running.challenger} (challenger) takes ${running.share} % of `,
      `${(running.countries || []).join(", ") || "all countries"}' subjects from ${running.champion} (champion). `,
      `Compared on ${metric}, each verification counted once it is ${horizon} old, as it stood then; `,
      `a verdict from ${running.min_sample} counted in each arm, with 95 % confidence.`);
    const guardrail = el("p", { "data-field": "guardrail" }, typeof running.guardrail_pp === "number"
      ? `Guardrail: if ${running.challenger} is, with 95 % confidence, more than ${running.guardrail_pp} points below ` +
        `${running.champion}, the gateway stops sending it subjects by itself and tells the tenant.`
      : "No guardrail: the experiment runs until the policy ends it.");
    const scope = el("p", { class: "note", "data-field": "scope" },
      "These are the whole experiment's figures since it started: the period chosen above does not apply.");
    target.replaceChildren(setup, guardrail, scope);
    let figures;
    try {
      figures = await api("v1/experiments/" + encodeURIComponent(running.name));
    } catch (error) {
      const text = error instanceof Problem && error.status === 404
        ? "Experiment figures unavailable." : "Experiment figures unavailable: " + reason(error);
      target.append(el("p", { class: "note", "data-field": "message" }, text));
      return;
    }
    const rate = /rate|conversion/.test(figures.metric || "");
    const value = (v) => (typeof v !== "number" ? DASH : rate ? pct(v) : v.toFixed(2));
    const ci = (c) => (Array.isArray(c) && typeof c[0] === "number" ? `${value(c[0])} to ${value(c[1])}` : DASH);
    const progress = (a) => (a.sample >= figures.min_sample
      ? `${figures.min_sample} reached`
      : `${a.sample} of ${figures.min_sample} (${Math.floor((100 * a.sample) / figures.min_sample)} %)`);
    const rows = (figures.arms || []).map((a) =>
      el("tr", { "data-arm": a.arm },
        el("td", {}, a.arm), el("td", { "data-field": "provider" }, a.provider),
        el("td", { "data-field": "sample" }, a.sample), el("td", { "data-field": "maturing" }, a.maturing ?? DASH),
        el("td", { "data-field": "progress" }, progress(a)),
        el("td", { "data-field": "value" }, value(a.value)), el("td", { "data-field": "ci" }, ci(a.ci)),
        figure("td", a.time_to_decision_s_p50, seconds, null, { "data-field": "time_to_decision_s_p50" }),
        figure("td", a.cost_per_approved, (v) => v.toFixed(2) + (a.currency ? " " + a.currency : ""), null,
          { "data-field": "cost_per_approved" })));
    const cs = figures.difference_cs;
    const diff = typeof figures.difference !== "number" ? DASH : rate
      ? points(figures.difference) + (cs ? ` (95 % confidence sequence: ${points(cs[0])} to ${points(cs[1])})` : "")
      : figures.difference.toFixed(3);
    target.append(
      table("figures", ["Arm", "Provider", "Counted", "Maturing (younger than the horizon)", "Towards the minimum",
        metric, "95 % interval", "Median time to decision", "Cost per approved"], rows),
      el("dl", {},
        el("dt", {}, "Difference (challenger − champion)"), el("dd", { "data-field": "difference" }, diff),
        el("dt", {}, "p-value (always valid: read it as often as you like)"),
        el("dd", { "data-field": "always_valid_p_value" },
          typeof figures.always_valid_p_value === "number" ? figures.always_valid_p_value.toFixed(4) : DASH),
        el("dt", {}, "Verdict"),
        el("dd", { "data-field": "verdict", "data-value": figures.verdict }, VERDICTS[figures.verdict] || figures.verdict),
        el("dt", {}, "What it means"),
        el("dd", { "data-field": "reading" }, READINGS[figures.verdict] || ""),
        el("dt", {}, "Next step"),
        el("dd", { "data-field": "next_step" }, nextStep(running, figures.verdict)),
        el("dt", {}, "Challenger stopped by the guardrail"),
        el("dd", { "data-field": "stopped" }, figures.stopped ? "yes" : "no")));
  }

  // ---- replay -----------------------------------------------------------------------------

  /** The routing in force (GET /v1/policy) and the instances; the form starts from them. */
  let routingNow = null;
  let instances = [];
  /** Countries the period's figures name: the form offers a choice for each. */
  const countriesSeen = new Set();

  /** Whether a routing part limited to `countries` (empty: all) takes `country`. */
  const covers = (countries, country) => !countries || countries.length === 0 || countries.includes(country);

  /** What routes a country's subjects now, in words (routing's order: experiment, adaptive, rule). */
  function routedNow(routing, country) {
    const e = routing.experiment;
    if (e && covers(e.countries, country)) return `as now (experiment ${e.name}: ${e.champion} and ${e.challenger})`;
    const o = routing.optimize;
    if (o && covers(o.countries, country)) return `as now (adaptive among ${o.among.join(", ")})`;
    const rule = (routing.rules || []).find((r) => r.country === country);
    if (rule) return `as now (${rule.provider})`;
    return Object.keys(routing.split || {}).length ? "as now (the split)" : `as now (${routing.default})`;
  }

  /** The countries the form has a provider chosen for: { country: instance }. */
  function choices() {
    const chosen = {};
    for (const select of document.querySelectorAll("#country-choices select")) {
      if (select.value) chosen[select.dataset.country] = select.value;
    }
    return chosen;
  }

  /**
   * The routing in force with each chosen country ruled to its instance. An experiment or
   * adaptive routing that takes the country would come first, so the country leaves it; one
   * left with no country (or that took every country) ends. Answers the draft and what it ends.
   */
  function draftFrom(routing, chosen) {
    const draft = JSON.parse(JSON.stringify(routing));
    const notes = [];
    for (const [country, provider] of Object.entries(chosen)) {
      for (const [part, name] of [["experiment", "experiment"], ["optimize", "adaptive routing"]]) {
        const taken = draft[part];
        if (!taken || !covers(taken.countries, country)) continue;
        const left = (taken.countries || []).filter((c) => c !== country);
        if (left.length) {
          taken.countries = left;
          notes.push(`${country} leaves the ${name} (it keeps ${left.join(", ")}).`);
        } else {
          delete draft[part];
          notes.push(`The ${name} ends: ${country} was ${taken.countries && taken.countries.length ? "its last country" : "one of all the countries it took"}.`);
        }
      }
      draft.rules = (draft.rules || []).filter((r) => r.country !== country).concat([{ country, provider }]);
    }
    return { draft, notes };
  }

  /** Writes the form's choices into the draft JSON. */
  function choose() {
    const { draft, notes } = draftFrom(routingNow, choices());
    $("draft").value = JSON.stringify(draft, null, 2);
    $("draft-note").textContent = notes.join(" ");
  }

  /** A choice per country (those of the routing and of the period's figures), kept on redraw. */
  function renderCountryChoices() {
    const target = $("country-choices");
    if (!routingNow) return;
    const r = routingNow;
    const countries = [...new Set([...countriesSeen, ...(r.rules || []).map((x) => x.country),
      ...((r.experiment || {}).countries || []), ...((r.optimize || {}).countries || [])])].filter(Boolean).sort();
    const chosen = choices();
    if (countries.length === 0) {
      say(target, "No country recorded yet: write the draft as JSON below.");
    } else {
      target.replaceChildren(...countries.map((country) => el("label", {}, country,
        el("select", { "data-country": country, "aria-label": `Provider for ${country}` },
          el("option", { value: "" }, routedNow(r, country)),
          ...instances.map((name) => el("option", { value: name, selected: chosen[country] === name ? "" : null }, name))))),
        el("p", { class: "note", id: "draft-note", "data-field": "draft-note" }));
    }
    target.dataset.state = "ready";
  }

  /** Today's figures beside the draft's: approval rate and cost per approved, with intervals. */
  function outlookTable(today, projected) {
    const range = (c, format) => (Array.isArray(c) && typeof c[0] === "number" ? ` (${format(c[0])} to ${format(c[1])})` : "");
    const cost = (o) => (v) => v.toFixed(2) + (o.currency ? " " + o.currency : "");
    const cell = (o, field, format) => {
      const v = o[field];
      const known = typeof v === "number";
      return el("td", { "data-outlook": o === today ? "today" : "projected", "data-value": known ? String(v) : null },
        known ? format(v) + range(o[field.replace(/_approved$/, "_approved_ci").replace(/_rate$/, "_ci")], format) : DASH);
    };
    const rows = [
      ["approval_rate", "Approval rate (approved ÷ decided), 95 % interval", pct],
      ["cost_per_approved", "Cost per approved, 95 % interval", null],
    ].map(([field, label, format]) => el("tr", { "data-figure": field }, el("th", { scope: "row" }, label),
      cell(today, field, format || cost(today)), cell(projected, field, format || cost(projected))));
    return table("figures outlook", ["", "Today", "With the draft"], rows);
  }

  /** One sentence on what the draft changes, from the two outlooks. */
  function outlookSentence(today, projected) {
    if (typeof projected.approval_rate !== "number" || typeof today.approval_rate !== "number") {
      return "No projection: the draft sends decided verifications to an instance with none decided in the period.";
    }
    let text = `With the draft, the approval rate would be ${pct(projected.approval_rate)} instead of ${pct(today.approval_rate)} ` +
      `(${points(projected.approval_rate - today.approval_rate)})`;
    if (typeof projected.cost_per_approved === "number" && typeof today.cost_per_approved === "number") {
      const change = projected.cost_per_approved - today.cost_per_approved;
      text += ` and each approval would cost ${projected.cost_per_approved.toFixed(2)} instead of ` +
        `${today.cost_per_approved.toFixed(2)} ${today.currency} (${change > 0 ? "+" : "−"}${Math.abs(change).toFixed(2)})`;
    }
    const overlap = Array.isArray(projected.approval_ci) && Array.isArray(today.approval_ci) &&
      projected.approval_ci[0] <= today.approval_ci[1] && today.approval_ci[0] <= projected.approval_ci[1];
    return text + (overlap ? "; the two approval rates' intervals overlap, so the change may be smaller than it looks." : ".");
  }

  async function replay(event) {
    event.preventDefault();
    const target = $("replay");
    let routing;
    try {
      routing = JSON.parse($("draft").value);
    } catch (error) {
      return say(target, "The draft is not valid JSON: " + error.message, "error");
    }
    target.dataset.state = "loading";
    say(target, "Replaying…");
    try {
      const answer = await api("v1/policy/preview", { routing, since_days: Number($("since-days").value) });
      const moves = (answer.moves || []).map((m) =>
        el("tr", {}, el("td", {}, m.from), el("td", {}, m.to), el("td", {}, m.country), el("td", { "data-field": "count" }, m.count)));
      const range = (c) => (Array.isArray(c) && typeof c[0] === "number" ? `${pct(c[0])} to ${pct(c[1])}` : DASH);
      const few = (d) => (d.countries || []).filter((c) => c.too_few_observations).map((c) => c.country || "?");
      const destinations = (answer.destinations || []).map((d) =>
        el("tr", { "data-provider": d.provider }, el("td", {}, d.provider),
          figure("td", d.approval_rate, pct, null, { "data-field": "approval_rate" }),
          el("td", { "data-field": "approval_ci" }, range(d.approval_ci)),
          figure("td", d.observations, (v) => String(v), null, { "data-field": "observations" }),
          el("td", { "data-field": "too_few" }, few(d).length ? "too few finished in " + few(d).join(", ") : ""),
          figure("td", d.cost_per_approved, (v) => v.toFixed(2) + (d.currency ? " " + d.currency : ""), null,
            { "data-field": "cost_per_approved" }),
          figure("td", d.count, count, null, { "data-field": "count" })));
      const fallbacks = answer.fallbacks || 0;
      const moved = answer.total - answer.unchanged - fallbacks;
      const today = answer.today || {};
      const projected = answer.projected || {};
      const estimated = projected.estimated_from_overall
        ? el("p", { class: "note", "data-field": "estimated_from_overall" },
          `${projected.estimated_from_overall} of the moved decided verifications are counted at their destination's ` +
          "overall approval rate: it decided fewer than 30 in their country in the period.")
        : null;
      // (`estimated` may be null: replaceChildren would write it as text.)
      target.replaceChildren(...[
        el("p", {}, "Verifications replayed: ", el("span", { "data-field": "total" }, answer.total),
          "; unchanged: ", el("span", { "data-field": "unchanged" }, answer.unchanged),
          "; would move: ", el("span", { "data-field": "moved" }, moved), "."),
        el("p", { class: "note" }, el("span", { "data-field": "fallbacks" }, fallbacks),
          " ran at a fallback instance because the one routing chose was unavailable; the draft routes them the same, " +
          "so they are counted as unchanged routing, not as moves."),
        el("h3", {}, "What it would change"),
        el("p", { class: "verdict", "data-field": "outlook" }, outlookSentence(today, projected)),
        outlookTable(today, projected),
        el("p", { class: "note" }, `Over the ${today.decided ?? 0} replayed verifications that were decided. A moved one is ` +
          "counted at its destination's approval rate in its country; every other keeps its own outcome; " +
          "each costs its instance's price now."),
        estimated,
        el("h3", {}, "Moves"),
        moves.length ? table("figures", ["From (routing's choice then)", "To", "Country", "Verifications"], moves) : el("p", { class: "note" }, "None would move."),
        el("h3", {}, "Destinations"),
        table("figures", ["Provider", "Approval rate", "95 % interval", "Decided", "Countries with too few to say",
          "Cost per approved", "Verifications it would get"], destinations),
      ].filter((part) => part != null));
    } catch (error) {
      say(target, error instanceof Problem && error.status === 404 ? "Replay unavailable." : reason(error), "error");
    }
    target.dataset.state = "ready";
  }

  // ---- loading and the key ----------------------------------------------------------------

  /** Runs one section's loading, marking its state; a refused key stops everything. */
  async function section(id, load) {
    const target = $(id);
    target.dataset.state = "loading";
    target.replaceChildren(el("p", { class: "note", "data-field": "loading" }, "Loading…"));
    try {
      await load();
      target.dataset.state = "ready";
    } catch (error) {
      if (error instanceof Problem && error.status === 401) return refused();
      say(target, reason(error), "error");
      target.dataset.state = "error";
    }
  }

  /** A refused key, said plainly: the gateway's wording is for developers. */
  function refused() {
    forget();
    $("status").textContent = "This key was not accepted. Check that it is one of your tenant's current " +
      "API keys (a mistyped or expired key is refused); whoever runs the gateway can give you a read-only one.";
  }

  async function loadPeriod() {
    const from = $("from").value;
    const to = $("to").value;
    $("period-error").textContent = "";
    if (!from || !to || from > to) {
      $("period-error").textContent = "Choose a start day on or before the end day.";
      return;
    }
    // The view in the URL's fragment, to share it (never the key).
    history.replaceState(null, "", `#from=${from}&to=${to}`);
    const byProvider = api(statsPath(from, to, "provider"));
    byProvider.catch(() => {}); // each section below reports its own failure
    await Promise.all([
      section("summary", async () => renderSummary(await byProvider)),
      section("comparison", async () => renderComparison(await byProvider)),
      section("allocation", async () => renderAllocation(await byProvider)),
      section("by-country", async () => {
        const byCountry = await api(statsPath(from, to, "provider,country"));
        renderCountries(byCountry);
        for (const g of byCountry.groups) if (g.country) countriesSeen.add(g.country);
        renderCountryChoices();
      }),
      section("charts", () => loadCharts(from, to)),
    ]);
  }

  /** The last `n` days, today included, in UTC: [first, last]. */
  const lastDays = (n) => [new Date(Date.parse(today) - (n - 1) * DAY * 1000).toISOString().slice(0, 10), today];

  /**
   * The default period fitted to the data: from the first day with a verification in the last
   * 90 (at least the last 7 days) to today, so the charts are not half empty. Only for a page
   * opened without a period of its own (a shared link keeps its period).
   */
  async function fitPeriod() {
    const [from90, to] = lastDays(90);
    const stats = await api(statsPath(from90, to, "provider"));
    const [from7] = lastDays(7);
    const from = stats.first_day ? (stats.first_day < from7 ? stats.first_day : from7) : lastDays(30)[0];
    $("from").value = from;
    $("to").value = to;
    $("period-note").textContent = stats.first_day
      ? `From the first day with a verification in the last 90 days (${stats.first_day}) to today; the presets and dates change it.`
      : "No verification in the last 90 days: showing the last 30.";
  }

  async function loadAll() {
    $("status").textContent = "";
    $("key-state").textContent = "Key kept for this tab only.";
    $("content").hidden = false;
    if (fitting) {
      fitting = false;
      try {
        await fitPeriod();
      } catch (error) {
        if (error instanceof Problem && error.status === 401) return refused();
        // The last 30 days stay; each section reports its own failure.
      }
    }
    await Promise.all([
      loadPeriod(),
      section("experiment", async () => {
        const policy = await api("v1/policy");
        if (policy.calling_key && policy.calling_key.scope === "full") {
          $("key-state").textContent = "Key kept for this tab only. This key can also create and change " +
            "verifications; a read-only key (scope = \"read\" in the policy) is enough for this page.";
        }
        routingNow = policy.routing;
        instances = Object.keys(policy.providers || {}).sort();
        renderCountryChoices();
        $("draft").value = JSON.stringify(policy.routing, null, 2);
        $("replay-submit").disabled = false;
        await loadExperiment(policy.routing);
      }),
    ]);
  }

  function forget() {
    sessionStorage.removeItem(KEY);
    $("content").hidden = true;
    charts.splice(0).forEach((c) => c.destroy());
    for (const id of ["summary", "comparison", "charts", "by-country", "allocation", "experiment", "replay"]) {
      $(id).replaceChildren();
      $(id).dataset.state = "empty";
    }
    $("draft").value = "";
    routingNow = null;
    countriesSeen.clear();
    $("country-choices").replaceChildren();
    $("replay-submit").disabled = true;
    $("status").textContent = "";
    $("key-state").textContent = "No key: type one to see the figures.";
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key").value = "";
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    loadAll();
  });
  $("forget-key").addEventListener("click", forget);
  $("period-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("period-note").textContent = "";
    loadPeriod();
  });
  for (const preset of document.querySelectorAll("#period-form button[data-days]")) {
    preset.addEventListener("click", () => {
      [$("from").value, $("to").value] = lastDays(Number(preset.dataset.days));
      $("period-note").textContent = "";
      loadPeriod();
    });
  }
  $("replay-form").addEventListener("submit", replay);
  $("country-choices").addEventListener("change", choose);

  // The period a shared URL names (`#from=YYYY-MM-DD&to=YYYY-MM-DD`), else the last 30 days,
  // today included, in UTC, until the first load fits it to the data.
  const today = new Date().toISOString().slice(0, 10);
  const shared = new URLSearchParams(location.hash.slice(1));
  const isDay = (v) => /^\d{4}-\d{2}-\d{2}$/.test(v || "");
  /** Whether the first load fits the period to the data (no period in the URL). */
  let fitting = !(isDay(shared.get("from")) && isDay(shared.get("to")));
  $("to").value = isDay(shared.get("to")) ? shared.get("to") : today;
  $("from").value = isDay(shared.get("from")) ? shared.get("from") : lastDays(30)[0];
  if (sessionStorage.getItem(KEY)) loadAll();
})();

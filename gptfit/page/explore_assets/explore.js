// gptfit's explorer page: draws the views from the JSON in #gptfit-data. Nothing is loaded from the network.
// Each view's root has data-view; it gets data-rendered="true" once drawn. Uncaught errors are counted
// into document.body.dataset.errors.
"use strict";
window.addEventListener("error", () => {
  document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
});

const DATA = JSON.parse(document.getElementById("gptfit-data").textContent);
const VOCAB = DATA.vocab || [];
const tok = (id) => (VOCAB[id] === undefined ? `<${id}>` : VOCAB[id]);
const shown = (s) => s.replace(/\n/g, "⏎").replace(/ /g, "·");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function rendered(view) {
  document.querySelector(`[data-view="${view}"]`).dataset.rendered = "true";
}

const tip = el("div", { id: "tip", class: "tip" });
document.body.append(tip);
function showTip(event, html) {
  tip.innerHTML = html;
  tip.style.display = "block";
  tip.style.left = `${event.pageX + 12}px`;
  tip.style.top = `${event.pageY + 12}px`;
}
function hideTip() { tip.style.display = "none"; }
const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// -- the transforms of gptfit.core.sampling: temperature, then top-k (ties survive), then top-p -------------

function softmax(scores) {
  const max = Math.max(...scores.filter((s) => s > -Infinity));
  const exps = scores.map((s) => (s === -Infinity ? 0 : Math.exp(s - max)));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

// {ids, probs}: the tokens a setting keeps and their renormalized probabilities, most probable first.
function keep(logits, temperature, topK, topP, doSample = true, minTokensToKeep = 1) {
  const n = logits.length;
  if (!doSample || temperature === 0) {
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return { ids: [best], probs: [1] };
  }
  let scores = Array.from(logits, (x) => Math.fround(x));
  if (temperature !== 1) scores = scores.map((x) => Math.fround(x / Math.fround(temperature)));
  if (topK > 0) {
    const k = Math.min(Math.max(topK, minTokensToKeep), n);
    const kth = [...scores].sort((a, b) => b - a)[k - 1];
    scores = scores.map((x) => (x < kth ? -Infinity : x));
  }
  if (topP < 1) {
    const order = scores.map((_, i) => i).sort((a, b) => scores[a] - scores[b]);  // ascending
    const p = softmax(order.map((i) => scores[i]));
    let mass = 0;
    order.forEach((i, r) => {
      mass += p[r];
      // A token goes when the tokens up to and including it hold no more than 1 - top_p of the mass.
      if (mass <= 1 - topP && r < n - minTokensToKeep) scores[i] = -Infinity;
    });
  }
  const probs = softmax(scores);
  const ids = probs.map((_, i) => i).filter((i) => scores[i] > -Infinity).sort((a, b) => probs[b] - probs[a]);
  return { ids, probs: ids.map((i) => probs[i]) };
}
window.gptfitKeep = keep;

function float16s(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const halves = new Uint16Array(bytes.buffer);
  return Array.from(halves, (h) => {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
    if (exp === 31) return frac ? NaN : sign * Infinity;
    return sign * 2 ** (exp - 15) * (1 + frac / 1024);
  });
}

// -- curves -----------------------------------------------------------------------------------------------

function lineChart(root, title, series, best, xTitle = "tokens seen", xType = "linear") {
  const div = el("div", { class: "chart" });
  root.append(div);
  const traces = series.map(([name, xs, ys]) => ({ x: xs, y: ys, name, mode: "lines+markers", type: "scatter" }));
  const shapes = best === undefined ? [] : [{ type: "line", x0: best, x1: best, yref: "paper", y0: 0, y1: 1,
    line: { dash: "dot", color: "grey" } }];
  Plotly.newPlot(div, traces, { title: { text: title }, hovermode: "x unified", shapes, height: 340,
    margin: { t: 40, r: 10, b: 40, l: 50 }, xaxis: { title: { text: xTitle }, type: xType } },
  { displaylogo: false, responsive: true });
}

function drawCurves() {
  const root = document.querySelector('[data-view="curves"] .body');
  const runs = DATA.runs || [{ name: "", curves: DATA.curves }];
  for (const run of runs) {
    const rows = run.curves.rows;
    const pick = (k) => rows.filter((r) => k in r);
    const series = (keys) => keys.filter((k) => pick(k).length).map((k) => [run.name ? `${run.name} ${k}` : k,
      pick(k).map((r) => r.tokens_seen), pick(k).map((r) => r[k])]);
    const best = rows.find((r) => r.step === run.curves.best_step);
    if (run.link) root.append(el("p", {}, el("a", { href: run.link }, `${run.name}: its own page`)));
    lineChart(root, `${run.name || "run"}: losses (best validation step ${run.curves.best_step})`,
      series(["train/loss", "val/loss", "gap"]), best && best.tokens_seen);
    lineChart(root, `${run.name || "run"}: memorization and membership`, series(Object.keys(rows[rows.length - 1] || {})
      .filter((k) => k.startsWith("mem/") || k.startsWith("mia/"))), best && best.tokens_seen);
  }
  for (const ladder of DATA.ladder || []) lineChart(root, ladder.title, ladder.series, undefined, "training tokens", "log");
  rendered("curves");
}

// -- text ---------------------------------------------------------------------------------------------------

function lossColour(loss) {
  const t = Math.min(loss / 8, 1);  // 0 nats: white, 8 or more: deep red
  return `rgb(255,${Math.round(255 * (1 - t))},${Math.round(255 * (1 - t))})`;
}

function drawText() {
  const view = document.querySelector('[data-view="text"] .body');
  const list = el("div");
  // Lowest loss first (the most memorized), most exposures first, extracted first.
  const sorts = { loss: 1, exposures: -1, extracted: -1 };
  const order = el("select", {}, ...Object.keys(sorts).map((k) => el("option", { value: k }, `sort by ${k}`)));
  const filter = el("select", {}, ...["all", "train", "val", "extracted"].map((k) => el("option", { value: k }, k)));
  view.append(el("div", { class: "controls" }, order, filter), list);
  const sequences = (DATA.text && DATA.text.sequences) || [];
  const draw = () => {
    list.replaceChildren();
    const key = order.value;
    const chosen = sequences.filter((s) => filter.value === "all" || (filter.value === "extracted" ? s.extracted
      : s.split === filter.value)).sort((a, b) => sorts[key] * (Number(a[key]) - Number(b[key])));
    for (const s of chosen) {
      const line = el("div", { class: "seq" }, el("span", { class: "label" },
        `${s.split} #${s.id} · loss ${s.loss} · exposures ${s.exposures}${s.extracted ? " · extracted" : ""}`));
      s.tokens.forEach((id, t) => {
        if (t === 0) { line.append(el("span", { class: "tok" }, shown(tok(id)))); return; }
        const loss = s.losses[t - 1], memorized = s.ranks[t - 1] === 0;
        const span = el("span", { class: "tok" + (memorized ? " hit" : ""), style: `background:${lossColour(loss)}` },
          shown(tok(id)));
        const top = s.top_ids[t - 1].map((i, j) => `${esc(shown(tok(i)))} ${s.top_p[t - 1][j]}`).join("<br>");
        span.addEventListener("mouseenter", (e) => showTip(e, `loss ${loss} · rank ${s.ranks[t - 1] + 1}<br>${top}`));
        span.addEventListener("mouseleave", hideTip);
        line.append(span);
      });
      list.append(line);
    }
    if (!chosen.length) list.append(el("p", {}, "No sequences (this run has no per-sequence table)."));
  };
  order.addEventListener("change", draw);
  filter.addEventListener("change", draw);
  draw();
  rendered("text");
}

// -- samples ------------------------------------------------------------------------------------------------

function drawSamples() {
  const view = document.querySelector('[data-view="samples"] .body');
  const samples = DATA.samples || { steps: [], samples: [], sources: [] };
  if (!samples.steps.length) {
    view.append(el("p", {}, "No samples: this run decoded nothing (decoding=none or no prompts)."));
    rendered("samples");
    return;
  }
  const slider = el("input", { type: "range", min: 0, max: samples.steps.length - 1, value: samples.steps.length - 1 });
  const label = el("span");
  const list = el("div");
  view.append(el("div", { class: "controls" }, "step ", slider, label), list);
  const draw = () => {
    const step = samples.steps[Number(slider.value)];
    label.textContent = ` ${step}`;
    list.replaceChildren();
    for (const s of samples.samples.filter((x) => x.step === step)) {
      const text = el("span", { class: "prompt" }, shown(s.prompt_ids.map(tok).join("")));
      const line = el("div", { class: "seq" }, el("span", { class: "label" }, `${s.decoding} (${s.params}) · ${s.source}`), text);
      let at = 0;
      const plain = (a, b) => line.append(el("span", {}, shown(s.completion_ids.slice(a, b).map(tok).join(""))));
      for (const [start, end, source] of s.copies) {
        if (start < at) continue;
        plain(at, start);
        const copy = el("span", { class: "copy", "data-source": source }, shown(s.completion_ids.slice(start, end).map(tok).join("")));
        const src = samples.sources[source];
        copy.addEventListener("mouseenter", (e) => showTip(e, src ? `training document ${src.document}, token ${src.position}:<br>`
          + `${esc(src.before.map(tok).join(""))}<mark>${esc(src.span.map(tok).join(""))}</mark>${esc(src.after.map(tok).join(""))}`
          : "stitched from several places of the training text"));
        copy.addEventListener("mouseleave", hideTip);
        line.append(copy);
        at = end;
      }
      plain(at, s.completion_ids.length);
      list.append(line);
    }
  };
  slider.addEventListener("input", draw);
  draw();
  rendered("samples");
}

// -- decoding playground --------------------------------------------------------------------------------------

function drawBeams(root, tree, k) {
  // One column per step, one row per beam; under each beam, in grey, the candidates that would have
  // extended it at the next step and that no beam took (the pruned ones).
  const steps = tree.steps, svgNS = "http://www.w3.org/2000/svg", w = 150, line = 14, rowH = (k + 2) * line;
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", 20 + w * steps.length);
  svg.setAttribute("height", 20 + rowH * k);
  const x = (i) => 10 + i * w, y = (b) => 16 + b * rowH;
  const add = (tag, attrs, content) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [a, v] of Object.entries(attrs)) node.setAttribute(a, v);
    if (content !== undefined) node.textContent = content;
    svg.append(node);
  };
  steps.forEach((s, i) => {
    s.tokens.forEach((id, b) => {
      if (i > 0) add("line", { x1: x(i) - 14, y1: y(s.parents[b]) - 4, x2: x(i) - 2, y2: y(b) - 4, class: "edge" });
      add("text", { x: x(i), y: y(b), class: "beam" }, `${shown(tok(id))} (${s.scores[b]})`);
    });
    const next = steps[i + 1];
    if (!next) return;
    s.tokens.forEach((_, b) => {
      const pruned = next.top_ids[b].map((id, j) => [id, next.top_p[b][j]])
        .filter(([id]) => !next.tokens.some((t, c) => t === id && next.parents[c] === b));
      pruned.forEach(([id, p], j) => add("text", { x: x(i + 1), y: y(b) + (j + 1) * line, class: "pruned" },
        `${shown(tok(id))} ${p}`));
    });
  });
  root.append(el("p", {}, `best of ${k} beams: ${shown(tree.best.map(tok).join(""))}`), svg);
}

function drawDecoding() {
  const view = document.querySelector('[data-view="decoding"] .body');
  const prompts = (DATA.decoding && DATA.decoding.prompts) || [];
  if (!prompts.length) { view.append(el("p", {}, "No prompts.")); rendered("decoding"); return; }
  const input = (attrs) => el("input", attrs);
  const choice = el("select", {}, ...prompts.map((p, i) => el("option", { value: i }, shown(p.prompt.map(tok).join("")))));
  const step = input({ type: "range", min: 0, max: prompts[0].greedy.length - 1, value: 0 });
  const temperature = input({ type: "range", min: 0.05, max: 3, step: 0.05, value: 1 });
  const topK = input({ type: "number", min: 0, value: 6, style: "width:4em" });
  const topP = input({ type: "range", min: 0.05, max: 1, step: 0.01, value: 0.92 });
  const doSample = input({ type: "checkbox", checked: "" });
  const beams = el("select", {}, ...Object.keys(prompts[0].beams).map((k) => el("option", { value: k }, `${k} beams`)));
  const info = el("div"), bars = el("div"), tree = el("div", { class: "tree" });
  view.append(el("div", { class: "controls" }, "prompt ", choice, " step ", step, " T ", temperature, " top-k ", topK,
    " top-p ", topP, " do_sample ", doSample, " ", beams), info, bars, tree);
  const draw = () => {
    const p = prompts[Number(choice.value)];
    step.max = p.greedy.length - 1;
    const logits = float16s(p.logits), vocab = logits.length / p.greedy.length, t = Number(step.value);
    const row = logits.slice(t * vocab, (t + 1) * vocab);
    const kept = keep(row, Number(temperature.value), Number(topK.value), Number(topP.value), doSample.checked);
    const context = p.prompt.concat(p.greedy.slice(0, t)).map(tok).join("");
    info.textContent = `after “${shown(context)}” · T ${temperature.value} · top-k ${topK.value} · top-p ${topP.value} · `
      + `${kept.ids.length} tokens kept`;
    bars.replaceChildren(...kept.ids.slice(0, 20).map((id, j) => el("div", { class: "bar" },
      el("span", { class: "fill", style: `width:${(100 * kept.probs[j]).toFixed(1)}%` }), ` ${shown(tok(id))} ${kept.probs[j].toFixed(4)}`)));
    tree.replaceChildren();
    drawBeams(tree, p.beams[beams.value], Number(beams.value));
  };
  for (const c of [choice, step, temperature, topK, topP, doSample, beams]) c.addEventListener("input", draw);
  draw();
  rendered("decoding");
}

// -- attention ------------------------------------------------------------------------------------------------

function drawAttention() {
  const view = document.querySelector('[data-view="attention"] .body');
  const att = DATA.attention || { tokens: [], maps: [] };
  if (!att.tokens.length) { view.append(el("p", {}, "No attention prompt.")); rendered("attention"); return; }
  const layers = att.maps.length, heads = att.maps[0].length, n = att.tokens.length;
  const layer = el("select", {}, ...[...Array(layers).keys()].map((l) => el("option", { value: l }, `layer ${l}`)));
  const head = el("select", {}, el("option", { value: "mean" }, "mean of heads"),
    ...[...Array(heads).keys()].map((h) => el("option", { value: h }, `head ${h}`)));
  const svgNS = "http://www.w3.org/2000/svg", rowH = 20;
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", 520); svg.setAttribute("height", rowH * n + 10);
  view.append(el("div", { class: "controls" }, layer, " ", head), svg);
  const weights = (q) => [...Array(n).keys()].map((k) => (head.value === "mean"
    ? att.maps[layer.value].reduce((a, m) => a + m[q][k], 0) / heads : att.maps[layer.value][head.value][q][k]));
  const draw = (focus) => {
    svg.replaceChildren();
    att.tokens.forEach((id, i) => {
      for (const [x, anchor, side] of [[150, "end", "query"], [370, "start", "key"]]) {
        const t = document.createElementNS(svgNS, "text");
        t.setAttribute("x", x); t.setAttribute("y", 15 + i * rowH); t.setAttribute("text-anchor", anchor);
        t.setAttribute("class", `att-${side}` + (side === "query" && i === focus ? " focus" : ""));
        t.textContent = shown(tok(id));
        if (side === "query") t.addEventListener("mouseenter", () => draw(i));
        svg.append(t);
      }
    });
    if (focus === undefined) return;
    // The causal mask: a query attends to itself and earlier keys only, so lines go to k <= focus.
    weights(focus).forEach((w, k) => {
      if (k > focus || w <= 0) return;
      const l = document.createElementNS(svgNS, "line");
      for (const [a, v] of Object.entries({ x1: 155, y1: 10 + focus * rowH, x2: 365, y2: 10 + k * rowH })) l.setAttribute(a, v);
      l.setAttribute("stroke", "steelblue"); l.setAttribute("stroke-width", 3); l.setAttribute("stroke-opacity", w);
      l.setAttribute("class", "att-line"); l.dataset.key = k;
      svg.append(l);
    });
  };
  layer.addEventListener("input", () => draw(n - 1));
  head.addEventListener("input", () => draw(n - 1));
  draw(n - 1);
  rendered("attention");
}

for (const [view, draw] of [["curves", drawCurves], ["text", drawText], ["samples", drawSamples],
  ["decoding", drawDecoding], ["attention", drawAttention]]) {
  if (document.querySelector(`[data-view="${view}"]`)) draw();
}

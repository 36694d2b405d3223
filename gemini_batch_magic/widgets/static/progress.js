// The progress widget of one gemini_batch_magic run (anywidget ES module, no build step).
// Python computes every text (widgets/_text.py facts); this module lays it out, and while
// the run is live asks the kernel for fresh state on a timer (the "pull"), so the widget
// keeps moving where messages from a kernel thread do not render (Colab, marimo).

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function counts(node, text, failed) {
  // "12,340 / 20,000 · 12,301 ok · 39 failed": the failed part is red only when not zero
  node.replaceChildren();
  const parts = text.split(" · ");
  parts.forEach((part, i) => {
    if (i) node.append(" · ");
    const span = el("span", "", part);
    if (part.endsWith(" failed")) span.className = failed > 0 ? "gembatch-failed" : "gembatch-zero";
    if (part.endsWith(" ok")) span.className = "gembatch-ok";
    node.append(span);
  });
}

function previewTable(preview) {
  const box = el("div", "gembatch-preview-box");
  if (preview.error) {
    box.append(el("div", "gembatch-muted", preview.error));
    return box;
  }
  const table = el("table", "gembatch-preview");
  const head = el("tr");
  for (const c of preview.columns) head.append(el("th", "", c));
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const row of preview.rows) {
    const tr = el("tr");
    row.forEach((v, i) => tr.append(el(i ? "td" : "th", "", v)));
    body.append(tr);
  }
  table.append(body);
  box.append(table);
  if (preview.more > 0) {
    box.append(el("div", "gembatch-muted",
      `… ${preview.more.toLocaleString("en-US")} more rows: run.result()`));
  }
  return box;
}

function render({ model, el: host }) {
  const root = el("div", "gembatch-progress");
  const head = el("div", "gembatch-head");
  const badge = el("span", "gembatch-state");
  const title = el("span", "gembatch-title");
  const ident = el("code", "gembatch-id");
  const modelName = el("span", "gembatch-model");
  const cancel = el("button", "gembatch-cancel", "Cancel");
  cancel.type = "button";
  cancel.title = "Cancel every live batch job of this run (answers so far are kept)";
  head.append(badge, title, ident, modelName, el("span", "gembatch-spacer"), cancel);

  const barRow = el("div", "gembatch-bar-row");
  const bar = el("div", "gembatch-bar");
  bar.setAttribute("role", "progressbar");
  const fill = el("div", "gembatch-fill");
  bar.append(fill);
  const pct = el("span", "gembatch-percent");
  barRow.append(bar, pct);

  const facts = el("div", "gembatch-facts");
  const countsNode = el("span", "gembatch-counts");
  const timing = el("span", "gembatch-timing");
  facts.append(countsNode, timing);
  const note = el("div", "gembatch-note");
  const message = el("div", "gembatch-message");
  const details = el("div", "gembatch-details");
  const preview = el("div", "gembatch-preview-slot");
  root.append(head, barRow, facts, note, message, details, preview);
  host.append(root);

  let drawnPreview = null;
  function draw() {
    const state = model.get("state");
    const tone = model.get("tone");
    root.className = `gembatch-progress gembatch-tone-${tone} gembatch-state-${state.toLowerCase()}`;
    root.dataset.state = state;
    badge.textContent = state;
    title.textContent = model.get("title");
    ident.textContent = model.get("run_id");
    modelName.textContent = model.get("model_name");
    const live = model.get("live");
    cancel.hidden = !live;
    if (live && cancel.dataset.asked !== "1") cancel.disabled = false;
    const percent = model.get("percent");
    const known = model.get("counts_known") && percent !== null;
    bar.classList.toggle("gembatch-indeterminate", !known);
    fill.style.width = known ? `${Math.max(0, Math.min(100, percent))}%` : "";
    if (known) {
      bar.setAttribute("aria-valuenow", String(Math.round(percent)));
      pct.textContent = `${percent >= 99.5 && percent < 100 ? "99" : Math.round(percent)}%`;
    } else {
      bar.removeAttribute("aria-valuenow");
      pct.textContent = "";
    }
    pct.hidden = !known;
    counts(countsNode, model.get("counts"), model.get("failed"));
    timing.textContent = model.get("timing");
    note.textContent = model.get("note");
    note.hidden = !model.get("note");
    message.textContent = model.get("message");
    message.className = `gembatch-message gembatch-msg-${model.get("message_tone")}`;
    message.hidden = !model.get("message");
    details.textContent = model.get("details");
    const p = model.get("preview");
    const key = JSON.stringify(p);
    if (key !== drawnPreview) {
      drawnPreview = key;
      preview.replaceChildren();
      if (p && (p.columns || p.error)) preview.append(previewTable(p));
    }
    schedule();
  }

  let timer = null;
  function schedule() {
    const want = model.get("live");
    if (want && timer === null) {
      timer = setInterval(() => model.send({ type: "pull" }), model.get("pull_ms"));
      model.send({ type: "pull" });
    } else if (!want && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  }

  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    cancel.dataset.asked = "1";
    cancel.textContent = "Cancelling…";
    model.send({ type: "cancel" });
  });
  model.on("change", draw);
  draw();
  return () => {
    if (timer !== null) clearInterval(timer);
    model.off("change", draw);
  };
}

export default { render };

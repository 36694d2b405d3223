// The jobs panel of gemini_batch_magic (anywidget ES module, no build step).
// The kernel hands over rows of text (gemini_batch_magic/_panel.py); this module draws the
// table, the selected run's details and actions, and the submit form; while a run is live
// it asks the kernel for fresh rows on a timer (the "pull").

const COLUMNS = [
  ["Run", "id"], ["Name", "name"], ["State", "state"], ["Progress", "progress"],
  ["OK", "ok"], ["Failed", "failed"], ["Rows", "rows"], ["Model", "model"],
  ["Created", "created"], ["Cost", "cost"],
];
const NUMERIC = new Set(["ok", "failed", "rows", "cost"]);
const LABELS = { refresh: "Refresh", cancel: "Cancel", retry: "Retry failed", load: "Load" };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function button(label, cls, onClick) {
  const b = el("button", `gembatch-button ${cls}`, label);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function ago(seconds) {
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  const days = Math.floor(seconds / 86400);
  if (days < 30) return `${days} day${days === 1 ? "" : "s"} ago`;
  return new Date((Date.now() / 1000 - seconds) * 1000).toISOString().slice(0, 10);
}

function render({ model, el: host }) {
  const root = el("div", "gembatch-panel");
  const top = el("div", "gembatch-panel-top");
  top.append(el("span", "gembatch-panel-title", "Gemini batch runs"));
  const count = el("span", "gembatch-muted");
  top.append(count, el("span", "gembatch-spacer"));
  top.append(button("Reload", "gembatch-reload", () => model.send({ type: "reload" })));
  const status = el("div", "gembatch-status");

  const scroller = el("div", "gembatch-table-box");
  const table = el("table", "gembatch-runs");
  const thead = el("thead");
  const headRow = el("tr");
  let descending = true;
  const createdHead = { node: null };
  for (const [label, key] of COLUMNS) {
    const th = el("th", `gembatch-col-${key}${NUMERIC.has(key) ? " gembatch-num" : ""}`);
    if (key === "created") {
      const sort = button("", "gembatch-sort", () => { descending = !descending; drawRows(); });
      sort.title = "Sort by creation time";
      th.append(sort);
      createdHead.node = sort;
    } else {
      th.textContent = label;
    }
    headRow.append(th);
  }
  thead.append(headRow);
  const tbody = el("tbody");
  table.append(thead, tbody);
  scroller.append(table);
  const empty = el("div", "gembatch-empty",
    "No runs yet: submit one below, with %%gembatch, or with df.gembatch.submit(...).");

  const details = el("div", "gembatch-details-box");
  const form = el("div", "gembatch-form");
  root.append(top, status, scroller, empty, details, form);
  host.append(root);

  // -- the table ---------------------------------------------------------------------
  let offset = 0;  // browser clock minus kernel clock, for the relative times
  function drawRows() {
    const rows = [...model.get("rows")];
    rows.sort((a, b) => (descending ? b.created - a.created : a.created - b.created));
    createdHead.node.textContent = `Created ${descending ? "▼" : "▲"}`;
    createdHead.node.parentElement.setAttribute("aria-sort", descending ? "descending" : "ascending");
    count.textContent = rows.length ? `${rows.length} run${rows.length === 1 ? "" : "s"}` : "";
    empty.hidden = rows.length > 0;
    scroller.hidden = rows.length === 0;
    const selected = model.get("selected");
    const now = Date.now() / 1000 - offset;
    tbody.replaceChildren();
    for (const row of rows) {
      const tr = el("tr", `gembatch-row gembatch-run-${row.id}`);
      if (row.id === selected) tr.classList.add("gembatch-selected");
      tr.tabIndex = 0;
      tr.title = "Show details and actions";
      const pick = () => { model.set("selected", row.id === model.get("selected") ? "" : row.id); model.save_changes(); };
      tr.addEventListener("click", pick);
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
      for (const [, key] of COLUMNS) {
        const td = el("td", `gembatch-col-${key}${NUMERIC.has(key) ? " gembatch-num" : ""}`);
        if (key === "id") td.append(el("code", "", row.id));
        else if (key === "name") {
          td.textContent = row.name;
          if (row.parent) td.append(el("div", "gembatch-muted", `retry of ${row.parent}`));
        } else if (key === "state") td.append(el("span", `gembatch-state gembatch-tone-${row.tone}`, row.state));
        else if (key === "progress") {
          const wrap = el("div", "gembatch-progress-cell");
          const bar = el("div", `gembatch-bar gembatch-tone-${row.tone}`);
          const fill = el("div", "gembatch-fill");
          if (row.percent === null) bar.classList.add("gembatch-indeterminate");
          else fill.style.width = `${Math.max(0, Math.min(100, row.percent))}%`;
          bar.append(fill);
          wrap.append(bar, el("span", "gembatch-progress-text", row.progress));
          td.append(wrap);
        } else if (key === "failed") {
          td.textContent = row.failed === null ? "–" : row.failed.toLocaleString("en-US");
          if (row.failed > 0) td.classList.add("gembatch-failed");
        } else if (key === "created") {
          td.textContent = ago(now - row.created);
          td.title = new Date(row.created * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
        } else td.textContent = row[key];
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  // -- the selected run ----------------------------------------------------------------
  function drawDetails() {
    const d = model.get("details");
    details.replaceChildren();
    details.hidden = !d || !d.run_id;
    if (details.hidden) return;
    const dl = el("dl", "gembatch-facts");
    for (const [k, v] of d.facts) dl.append(el("dt", "", k), el("dd", "", v));
    details.append(dl);
    if (d.error) details.append(el("div", "gembatch-error", d.error));
    const actions = el("div", "gembatch-actions");
    for (const action of d.actions) {
      if (action === "load") continue;
      actions.append(button(LABELS[action], `gembatch-${action}`,
        () => model.send({ type: "action", action, run_id: d.run_id })));
    }
    if (d.actions.includes("load")) {
      const group = el("span", "gembatch-load-group");
      const input = el("input", "gembatch-variable");
      input.value = d.variable;
      input.setAttribute("aria-label", "Variable that receives the results");
      input.spellcheck = false;
      const load = button("Load results into", "gembatch-load",
        () => model.send({ type: "action", action: "load", run_id: d.run_id, variable: input.value }));
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") load.click(); });
      group.append(load, input);
      actions.append(group);
    }
    actions.append(button("Copy run id", "gembatch-copy", async () => {
      try {
        await navigator.clipboard.writeText(d.run_id);
        status.textContent = `copied ${d.run_id}`;
      } catch {
        status.textContent = `run id: ${d.run_id} (the browser refused the clipboard: select it)`;
      }
      status.className = "gembatch-status gembatch-status-info";
      status.hidden = false;
    }));
    details.append(actions);
  }

  // -- the form ------------------------------------------------------------------------
  const frameSel = el("select", "gembatch-frame");
  const modeSel = el("select", "gembatch-mode");
  for (const [v, t] of [["column", "a column"], ["template", "a {column} template"]]) {
    const o = el("option", "", t); o.value = v; modeSel.append(o);
  }
  const columnSel = el("select", "gembatch-column");
  const template = el("textarea", "gembatch-template");
  template.rows = 2;
  template.placeholder = "Summarise this review in five words: {text}";
  const modelInput = el("input", "gembatch-model");
  modelInput.value = model.get("default_model");
  modelInput.spellcheck = false;
  const estimateBox = el("div", "gembatch-estimate-box");
  const submit = button("Submit", "gembatch-submit gembatch-primary", () => {
    submit.disabled = true;
    model.send({ type: "submit", form: current() });
  });
  const noFrames = el("div", "gembatch-muted",
    "No input DataFrame in the notebook yet: define one, then Reload.");
  function field(label, control) {
    const f = el("label", "gembatch-field");
    f.append(el("span", "gembatch-label", label), control);
    return f;
  }
  const columnField = field("Column", columnSel);
  const templateField = field("Template", template);
  const grid = el("div", "gembatch-form-grid");
  grid.append(field("DataFrame", frameSel), field("Prompts from", modeSel), columnField,
    templateField, field("Model", modelInput));
  form.append(el("div", "gembatch-form-title", "Submit a DataFrame"), noFrames, grid, estimateBox, submit);

  function current() {
    return { frame: frameSel.value, mode: modeSel.value, column: columnSel.value,
      template: template.value, model: modelInput.value };
  }
  function drawFrames() {
    const frames = model.get("frames");
    const keep = frameSel.value;
    frameSel.replaceChildren();
    for (const f of frames) {
      const o = el("option", "", `${f.name} (${f.rows.toLocaleString("en-US")} rows)`);
      o.value = f.name; frameSel.append(o);
    }
    if (frames.some((f) => f.name === keep)) frameSel.value = keep;
    noFrames.hidden = frames.length > 0;
    grid.hidden = frames.length === 0;
    drawColumns();
  }
  function drawColumns() {
    const f = model.get("frames").find((x) => x.name === frameSel.value);
    const keep = columnSel.value;
    columnSel.replaceChildren();
    for (const c of f ? f.columns : []) { const o = el("option", "", c); o.value = c; columnSel.append(o); }
    if (f && f.columns.includes(keep)) columnSel.value = keep;
    const tpl = modeSel.value === "template";
    columnField.hidden = tpl;
    templateField.hidden = !tpl;
  }
  let pending = null;
  function formChanged() {
    drawColumns();
    submit.disabled = true;
    clearTimeout(pending);
    pending = setTimeout(() => { if (frameSel.value) model.send({ type: "estimate", form: current() }); }, 350);
  }
  for (const c of [frameSel, modeSel, columnSel]) c.addEventListener("change", formChanged);
  for (const c of [template, modelInput]) c.addEventListener("input", formChanged);
  function drawEstimate() {
    const e = model.get("estimate");
    const same = e && e.form && JSON.stringify(e.form) === JSON.stringify(current());
    estimateBox.replaceChildren();
    if (e && e.error) estimateBox.append(el("div", "gembatch-error", e.error));
    else if (e && e.html) estimateBox.innerHTML = e.html;
    submit.textContent = same && e.submit_label ? e.submit_label : "Submit";
    submit.disabled = !(same && e.html);
    submit.hidden = !frameSel.value;
  }

  // -- status, sync, timer -------------------------------------------------------------
  function drawStatus() {
    const s = model.get("status");
    status.hidden = !s || !s.text;
    if (!status.hidden) {
      status.textContent = s.text;
      status.className = `gembatch-status gembatch-status-${s.kind}`;
    }
  }
  let timer = null;
  function schedule() {
    const want = model.get("live");
    if (want && timer === null) timer = setInterval(() => model.send({ type: "pull" }), model.get("pull_ms"));
    else if (!want && timer !== null) { clearInterval(timer); timer = null; }
  }
  const onRows = () => { offset = Date.now() / 1000 - model.get("now"); drawRows(); schedule(); };
  const onSelected = () => drawRows();
  model.on("change:rows", onRows);
  model.on("change:now", onRows);
  model.on("change:live", schedule);
  model.on("change:selected", onSelected);
  model.on("change:details", drawDetails);
  model.on("change:frames", () => { drawFrames(); formChanged(); });
  model.on("change:estimate", drawEstimate);
  model.on("change:status", drawStatus);
  const clock = setInterval(drawRows, 30000);  // "just now" becomes "1 min ago"
  onRows(); drawDetails(); drawFrames(); drawStatus(); drawEstimate();
  if (frameSel.value) formChanged();
  return () => { if (timer !== null) clearInterval(timer); clearInterval(clock); };
}

export default { render };

// New job: upload a file and see its validation report, pick model, method, preset and hyperparameters (the
// resolved defaults come back from a dry run), see the estimate, then start the job.
import { get, post } from "./api.js";
import { bytes, duration, errorBox, h, kv, mount, num, table } from "./dom.js";

export function report(file) {
  const r = file.report || {};
  const tokens = r.tokens || {};
  const parts = [h("h2", {}, `${file.filename}: ${file.status === "processed" ? "valid" : "has errors"}`), kv([
    ["file id", file.id], ["kind", r.kind], ["records", num(r.records)], ["valid records", num(r.valid_records)],
    ["formats", Object.entries(r.formats || {}).map(([f, n]) => `${f}: ${n}`).join(", ") || "—"],
    ["tokens", tokens.total === undefined ? "—" : `${num(tokens.total)} in all; min ${tokens.min}, mean ${tokens.mean}, `
      + `p95 ${tokens.p95}, max ${tokens.max}${tokens.exact ? "" : " (estimated)"}`],
    ["truncated", h("span", { id: "report-truncated" }, r.max_length ? `${num(r.truncated)} `
      + `(${(100 * (r.truncated_share || 0)).toFixed(1)} %) over ${r.max_length} tokens` : "with the job's max length: "
      + "see the estimate")],
  ])];
  if (file.status_details) parts.push(h("p", { class: "error", role: "alert" }, file.status_details));
  if ((r.errors || []).length) {
    parts.push(table(["line", "field", "problem"], r.errors.map((e) => h("tr", { class: "bad-line" },
      h("td", {}, `line ${e.line}`), h("td", {}, e.field || "—"), h("td", {}, e.message)))));
  }
  return h("section", { class: "card", id: "report" }, parts);
}

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

async function upload(chosen) {
  const data = new FormData();
  data.append("purpose", "fine-tune");
  data.append("file", chosen, chosen.name);
  return post("/v1/files", data);
}

export async function newJobPage(view) {
  let file = null;
  let validation = null;
  const fileInput = h("input", { type: "file", id: "upload", accept: ".jsonl,.json,.csv,.parquet" });
  const reportBox = h("div", { id: "report-box" });
  const estimateBox = h("div", { id: "estimate" });
  const message = h("div", { id: "form-message" });
  const models = (await get("/v1/models").catch(() => ({ data: [] }))).data;
  const presets = (await get("/v1/presets")).data;
  const inputs = {
    model: h("input", { id: "f-model", list: "model-list", required: true,
      value: (models.find((m) => m.owned_by === "base") || {}).id || "" }),
    method: h("select", { id: "f-method" },
      ["supervised", "dpo", "reinforcement"].map((m) => h("option", { value: m }, m))),
    grader: h("textarea", { id: "f-grader", rows: 4, spellcheck: false,
      placeholder: '{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", '
        + '"reference": "{{item.answer}}", "operation": "eq"}' }),
    preset: h("select", { id: "f-preset" }, presets.map((p) => h("option", { value: p.id, title: p.description }, p.id))),
    n_epochs: h("input", { id: "f-epochs", type: "number", min: "0", step: "any", placeholder: "auto" }),
    batch_size: h("input", { id: "f-batch", type: "number", min: "1", step: "1", placeholder: "auto" }),
    learning_rate_multiplier: h("input", { id: "f-lrm", type: "number", min: "0", step: "any", placeholder: "auto" }),
    rank: h("input", { id: "f-rank", type: "number", min: "1", step: "1", placeholder: "preset's" }),
    max_length: h("input", { id: "f-maxlen", type: "number", min: "16", step: "1", placeholder: "preset's" }),
    name: h("input", { id: "f-name", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", placeholder: "optional alias" }),
  };
  const datalist = h("datalist", { id: "model-list" }, models.map((m) => h("option", { value: m.id })));

  function body(dryRun) {
    const hyper = {};
    for (const key of ["n_epochs", "batch_size", "learning_rate_multiplier"]) {
      if (inputs[key].value !== "") hyper[key] = Number(inputs[key].value);
    }
    const method = inputs.method.value;
    const settings = { hyperparameters: hyper };
    if (method === "reinforcement") settings.grader = graderValue();
    const out = { model: inputs.model.value.trim(), training_file: file && file.id, preset: inputs.preset.value,
      method: { type: method, [method]: settings } };
    if (inputs.rank.value) out.lora = { r: Number(inputs.rank.value), lora_alpha: 2 * Number(inputs.rank.value) };
    if (inputs.max_length.value) out.max_length = Number(inputs.max_length.value);
    if (validation) out.validation_file = validation.id;
    if (inputs.name.value) { out.name = inputs.name.value; out.suffix = inputs.name.value.replace(/[^A-Za-z0-9_-]/g, "-"); }
    if (dryRun) out.dry_run = true;
    return out;
  }

  // the grader as typed; text that is not JSON goes as it is, so the gateway names the problem (a 400 on grader)
  function graderValue() {
    if (!inputs.grader.value.trim()) return undefined;  // none yet: the gateway says a grader is required
    try { return JSON.parse(inputs.grader.value); } catch { return inputs.grader.value; }
  }

  function showEstimate(answer) {
    const e = answer.estimate;
    const basis = e.seconds_basis;
    const how = basis.source === "history"
      ? `from ${basis.jobs} recent job(s) of this model and preset (${num(basis.tokens_per_second, 0)} tok/s)`
      : `no job of this model and preset yet: a default ${num(basis.tokens_per_second, 0)} tok/s`;
    const hp = e.hyperparameters || {};
    estimateBox.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Estimate"), kv([
      ["tokens", `${num(e.tokens)}${e.tokens_exact ? "" : " (estimated)"}`],
      ["optimizer steps", `${num(e.steps)} (${e.epochs} epochs, batch ${e.batch_size})`],
      ["truncated", `${num(e.truncated)} records (${(100 * e.truncated_share).toFixed(1)} %) over ${e.max_length} tokens`],
      ["wall time", h("span", { id: "est-seconds" }, `${duration(e.seconds)} — ${how}`)],
      ["peak GPU memory", e.peak_memory_bytes ? bytes(e.peak_memory_bytes) : (e.memory_basis || {}).reason],
      ["resolved", Object.entries(hp).map(([k, v]) => `${k} ${v}`).join(", ")],
      ...(e.rollouts ? [["rollouts", h("span", { id: "est-rollouts" },
        `${num(e.rollouts)} prompts answered ${e.samples_per_rollout} times: ${num(e.samples)} sampled answers`)]] : []),
    ])));
    const cut = document.getElementById("report-truncated");
    if (cut) cut.textContent = `${num(e.truncated)} (${(100 * e.truncated_share).toFixed(1)} %) over ${e.max_length} `
      + `tokens${e.tokens_exact ? "" : " (estimated)"}`;
    inputs.n_epochs.placeholder = `auto (${hp.n_epochs})`;
    inputs.batch_size.placeholder = `auto (${hp.batch_size})`;
    inputs.learning_rate_multiplier.placeholder = `auto (${hp.learning_rate_multiplier})`;
    inputs.max_length.placeholder = `preset's (${e.max_length})`;
  }

  async function estimate() {
    message.replaceChildren();
    if (!file || file.status !== "processed" || !inputs.model.value.trim()) return;
    try { showEstimate(await post("/v1/fine_tuning/jobs", body(true))); } catch (err) {
      estimateBox.replaceChildren(errorBox(err));
    }
  }

  const validationInput = h("input", { type: "file", id: "validation-upload", accept: ".jsonl,.json,.csv,.parquet" });
  const validationBox = h("div");
  validationInput.addEventListener("change", async () => {
    const chosen = validationInput.files[0];
    validation = null;
    if (!chosen) { validationBox.replaceChildren(); return; }
    try {
      const uploaded = await upload(chosen);
      const ok = uploaded.status === "processed";
      validation = ok ? uploaded : null;
      validationBox.replaceChildren(h("p", { id: "validation-report", class: ok ? "ok" : "error" }, ok
        ? `${chosen.name}: ${uploaded.report.valid_records} records; after training, the fine-tune and its base `
          + "answer them and are scored side by side" : `${chosen.name}: ${uploaded.status_details}`));
      await estimate();
    } catch (err) { validationBox.replaceChildren(errorBox(err)); }
  });

  const graderField = field("Grader (reinforcement)", inputs.grader, "an OpenAI grader as JSON: string_check, "
    + "text_similarity, python, score_model, label_model or multi; it scores each sampled answer");
  const showGrader = () => { graderField.hidden = inputs.method.value !== "reinforcement"; };
  inputs.method.addEventListener("change", showGrader);
  showGrader();
  const start = h("button", { id: "start", type: "submit", disabled: true }, "Start job");
  const form = h("form", { class: "card", id: "job-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const job = await post("/v1/fine_tuning/jobs", body(false));
      location.hash = `#/jobs/${job.id}`;
    } catch (err) { message.replaceChildren(errorBox(err)); }
  } }, h("h2", {}, "Job"), datalist,
  field("Base model", inputs.model, "a base model, a fine-tune to continue, or an alias"),
  h("div", { class: "row" }, field("Method", inputs.method), field("Preset", inputs.preset)),
  graderField,
  h("div", { class: "row" }, field("Epochs", inputs.n_epochs), field("Batch size", inputs.batch_size),
    field("LR multiplier", inputs.learning_rate_multiplier)),
  h("div", { class: "row" }, field("LoRA rank", inputs.rank), field("Max length", inputs.max_length),
    field("Name", inputs.name)),
  field("Validation file (optional)", validationInput, "held-out records: validation loss during training, "
    + "then an evaluation of the fine-tune against its base"), validationBox,
  h("div", { class: "actions" }, h("button", { type: "button", id: "estimate-button", onclick: estimate },
    "Estimate"), start), message);
  for (const input of Object.values(inputs)) input.addEventListener("change", estimate);

  fileInput.addEventListener("change", async () => {
    const chosen = fileInput.files[0];
    if (!chosen) return;
    file = null;
    start.disabled = true;
    estimateBox.replaceChildren();
    reportBox.replaceChildren(h("p", { class: "muted" }, `Uploading ${chosen.name}…`));
    try {
      file = await upload(chosen);
      reportBox.replaceChildren(report(file));
      start.disabled = file.status !== "processed";
      const fits = { preference: "dpo", prompts: "reinforcement" }[(file.report || {}).kind];
      if (fits) { inputs.method.value = fits; showGrader(); }
      await estimate();
    } catch (err) {
      reportBox.replaceChildren(h("section", { class: "card", id: "report" }, h("h2", {}, `${chosen.name}: refused`),
        errorBox(err)));
    }
  });
  mount(view, h("h1", {}, "New fine-tuning job"),
    h("section", { class: "card" }, h("h2", {}, "Training file"), fileInput,
      h("p", { class: "muted small" }, "JSONL, JSON, CSV or Parquet: chat messages, prompt/completion, "
        + "question/answer, Alpaca, preference pairs for DPO, or prompts for reinforcement (OpenAI's RFT rows).")), reportBox, form, estimateBox);
}

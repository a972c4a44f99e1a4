// One job: live loss curves and events (the SSE stream, resumed with Last-Event-ID), controls, hyperparameters,
// checkpoints with their metrics, the evaluation summary and links to the model.
import { all, get, post, stream } from "./api.js";
import { lossChart } from "./chart.js";
import { badge, errorBox, h, kv, mount, num, table, when } from "./dom.js";
import { eta, progress } from "./jobs.js";

const CONTROLS = { cancel: ["queued", "running", "paused", "validating_files"], pause: ["running", "queued"],
  resume: ["paused"] };

// The config the job trains with, exactly as the worker resolved it (and the trainer loaded it); until a worker
// takes the job, what the preset will decide is still open.
function trainingConfig(config) {
  if (!config) return h("p", { class: "muted", id: "training-config" }, "The training config is resolved when a worker "
    + "takes the job (its preset decides what is still auto).");
  const flat = Object.entries(config).flatMap(([k, v]) => v && typeof v === "object" && !Array.isArray(v)
    ? Object.entries(v).map(([kk, vv]) => [`${k}.${kk}`, vv]) : [[k, v]]);
  return h("details", { id: "training-config" }, h("summary", {}, "Training config (as the trainer received it)"),
    kv(flat.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ")
      : String(v)])));
}

export function evaluationSummary(evaluation) {
  if (!evaluation) return h("p", { class: "muted" }, "No evaluation: the job had no held-out records.");
  const models = evaluation.models || {};
  const metrics = evaluation.metrics || Object.keys(models.tuned || {});
  const rows = metrics.map((m) => {
    const tuned = (models.tuned || {})[m], base = (models.base || {})[m];
    const better = typeof tuned === "number" && typeof base === "number" ? (tuned > base ? "up" : tuned < base
      ? "down" : "same") : "";
    return h("tr", { dataset: { metric: m } }, h("td", {}, m), h("td", { class: "num", dataset: { model: "base" } },
      num(base)), h("td", { class: `num ${better}`, dataset: { model: "tuned" } }, num(tuned)),
    h("td", { class: `num ${better}` }, typeof tuned === "number" && typeof base === "number"
      ? `${tuned >= base ? "+" : ""}${(tuned - base).toFixed(4)}` : "—"));
  });
  // DPO and RFT from a fine-tune are compared with that parent, not the base
  const against = evaluation.against === "parent" ? "parent" : "base";
  const other = evaluation.compared_model ? `${against} (${evaluation.compared_model})` : `${against} model`;
  const rejected = evaluation.rejected ? h("p", { class: "muted" }, `The rejected answer, given greedily: `
    + `${num(evaluation.rejected.base)} (${against}) -> ${num(evaluation.rejected.tuned)} (fine-tune).`) : null;
  return h("div", { class: "evaluation" },
    h("p", {}, `${evaluation.n ?? "?"} held-out records answered by the ${other} and the fine-tune.`),
    table(["metric", against, "tuned", "difference"], rows), rejected,
    evaluation.eval_id ? h("a", { href: `#/evals/${evaluation.eval_id}` }, "Every item, side by side") : null);
}

// a reinforcement job's grader: its name and type (and a multi grader's members)
function grader(job) {
  const g = (job.method[job.method.type] || {}).grader;
  if (!g) return null;
  const members = g.type === "multi" ? ` of ${Object.keys(g.graders || {}).join(", ")}` : "";
  return `${g.name} (${g.type}${members})`;
}

export async function jobPage(view, id) {
  let job = await get(`/v1/fine_tuning/jobs/${id}`);
  const header = h("div", { class: "head" });
  const summary = h("div", { class: "card" });
  const chartBox = h("div", { class: "chart", id: "loss-chart", dataset: { points: "0" } });
  const log = h("ol", { class: "events", id: "events" });
  const checkpoints = h("div", { id: "checkpoints" });
  const evaluation = h("div", { id: "evaluation" });
  const message = h("div");
  mount(view, header, message, h("div", { class: "grid" },
    h("section", { class: "card wide" }, h("h2", {}, { dpo: "Loss and reward accuracy",
      reinforcement: "Loss and reward" }[job.method.type] || "Loss"), chartBox),
    summary,
    h("section", { class: "card" }, h("h2", {}, "Evaluation"), evaluation),
    h("section", { class: "card wide" }, h("h2", {}, "Checkpoints"), checkpoints),
    h("section", { class: "card wide" }, h("h2", {}, "Events"), log)));
  const chart = lossChart(chartBox);

  function control(action) {
    return h("button", { class: action === "cancel" ? "danger" : "", dataset: { action },
      disabled: !CONTROLS[action].includes(job.status), onclick: async () => {
        message.replaceChildren();
        try { job = await post(`/v1/fine_tuning/jobs/${id}/${action}`); draw(); } catch (err) {
          message.replaceChildren(errorBox(err));
        }
      } }, action[0].toUpperCase() + action.slice(1));
  }

  function draw() {
    header.replaceChildren(h("h1", {}, job.name || job.id), h("span", { id: "job-status" }, badge(job.status)),
      h("div", { class: "actions" }, control("pause"), control("resume"), control("cancel")));
    const model = job.fine_tuned_model;
    summary.replaceChildren(h("h2", {}, "Job"), kv([
      ["id", job.id], ["base model", job.base_model], ["started from", job.parent_model || job.model],
      ["method", job.method.type], ["grader", grader(job)], ["progress", progress(job)], ["ETA", eta(job)],
      ["created", when(job.created_at)], ["finished", when(job.finished_at)],
      ["trained tokens", num(job.trained_tokens)], ["training file", job.training_file],
      ["error", job.error ? job.error.message : null],
      ["model", model ? h("span", {}, h("a", { href: "#/models" }, model), " · ",
        h("a", { href: `#/chat?model=${encodeURIComponent(job.name || model)}` }, "chat with it")) : null],
    ]), h("h3", {}, "Hyperparameters"), kv(Object.entries({ ...job.hyperparameters,
      ...((job.method[job.method.type] || {}).hyperparameters || {}) }).map(([k, v]) => [k, String(v)])),
    trainingConfig(job.training_config));
    evaluation.replaceChildren(evaluationSummary(job.evaluation));
  }
  draw();

  async function loadCheckpoints() {
    const items = await all(`/v1/fine_tuning/jobs/${id}/checkpoints`);
    checkpoints.replaceChildren(table(["step", "checkpoint", "train loss", "validation loss", "created"],
      items.map((c) => h("tr", {}, h("td", {}, c.step_number), h("td", { class: "mono" }, c.fine_tuned_model_checkpoint),
        h("td", {}, num((c.metrics || {}).train_loss)), h("td", {}, num((c.metrics || {}).valid_loss)),
        h("td", {}, when(c.created_at)))), "No checkpoint yet."));
  }
  await loadCheckpoints().catch((err) => checkpoints.replaceChildren(errorBox(err)));

  let refresh = null;
  const stop = stream(`/v1/fine_tuning/jobs/${id}/events/stream`, async (name, data) => {
    if (name === "fine_tuning.job.event") {
      log.prepend(h("li", { class: `level-${data.level}` }, h("time", {}, when(data.created_at)), " ", data.message));
      if (data.type === "metrics") chart.add(data.data || {});
      if (data.data && data.data.checkpoint) loadCheckpoints().catch(() => {});
      clearTimeout(refresh);
      refresh = setTimeout(async () => { job = await get(`/v1/fine_tuning/jobs/${id}`).catch(() => job); draw(); },
        300);
    } else if (name === "end") {
      job = Object.keys(data).length ? data : job;
      draw();
      loadCheckpoints().catch(() => {});
    } else if (name === "error") {
      message.replaceChildren(errorBox(data));
    }
  });
  return () => { stop(); clearTimeout(refresh); chart.destroy(); };
}

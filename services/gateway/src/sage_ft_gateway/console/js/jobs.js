// The jobs list: status, progress, ETA, base model, method and created time, with filters; refreshed while shown.
import { all, jobStatuses } from "./api.js";
import { badge, duration, errorBox, h, mount, table, when } from "./dom.js";

export function progress(job) {
  const total = job.total_steps || 0;
  const pct = total ? Math.min(100, (100 * job.step) / total) : job.status === "succeeded" ? 100 : 0;
  return h("div", { class: "progress", title: `${job.step || 0}/${total} steps` },
    h("div", { class: "bar", style: `width:${pct.toFixed(1)}%` }),
    h("span", {}, total ? `${job.step}/${total}` : job.status === "succeeded" ? "done" : "—"));
}

export function eta(job) {
  if (!job.estimated_finish || job.status !== "running") return "—";
  return duration(job.estimated_finish - Date.now() / 1000);
}

export async function jobsPage(view) {
  const filters = { status: "", method: "", text: "" };
  const list = h("div", { id: "jobs-table" });
  const statuses = ["", ...(await jobStatuses())];
  const status = h("select", { "aria-label": "status", onchange: (e) => { filters.status = e.target.value; draw(); } },
    statuses.map((s) => h("option", { value: s }, s || "any status")));
  const method = h("select", { "aria-label": "method", onchange: (e) => { filters.method = e.target.value; draw(); } },
    ["", "supervised", "dpo"].map((s) => h("option", { value: s }, s || "any method")));
  const text = h("input", { type: "search", placeholder: "model, name or id", "aria-label": "search",
    oninput: (e) => { filters.text = e.target.value.toLowerCase(); draw(); } });
  mount(view, h("div", { class: "head" }, h("h1", {}, "Fine-tuning jobs"),
    h("a", { class: "button", href: "#/new" }, "New job")),
  h("div", { class: "filters" }, status, method, text), list);

  let jobs = [];
  function draw() {
    const shown = jobs.filter((j) => (!filters.status || j.status === filters.status)
      && (!filters.method || j.method.type === filters.method)
      && (!filters.text || [j.id, j.model, j.base_model, j.name, j.fine_tuned_model].join(" ").toLowerCase()
        .includes(filters.text)));
    list.replaceChildren(table(["Job", "Status", "Progress", "ETA", "Base model", "Method", "Created"],
      shown.map((j) => h("tr", { dataset: { job: j.id } },
        h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name || j.id), h("div", { class: "muted small" }, j.id)),
        h("td", {}, badge(j.status)), h("td", {}, progress(j)), h("td", {}, eta(j)),
        h("td", {}, j.base_model), h("td", {}, j.method.type), h("td", {}, when(j.created_at)))),
      jobs.length ? "No job matches these filters." : "No jobs yet. Start one from New job."));
  }
  let timer = null;
  let stopped = false;
  async function load() {
    try {
      jobs = await all("/v1/fine_tuning/jobs");
      draw();
    } catch (err) {
      list.replaceChildren(errorBox(err));
    }
    if (!stopped) timer = setTimeout(load, jobs.some((j) => ["queued", "running", "validating_files"]
      .includes(j.status)) ? 2000 : 5000);
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}

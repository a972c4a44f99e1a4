// Evaluation: evals and their runs with scores; a run pair (a job's fine-tune and its base, or any two runs) side by
// side, item by item, with the items where the answers differ first.
import { all, get } from "./api.js";
import { badge, h, mount, num, table, when } from "./dom.js";

function scores(run) {
  const counts = run.result_counts || {};
  const total = counts.total || 0;
  return (run.per_testing_criteria_results || []).map((c) => `${c.testing_criteria} ${c.passed}/${total}`).join(", ");
}

export async function evalsPage(view) {
  const evals = await all("/v1/evals?order=desc");
  const rows = [];
  for (const ev of evals) {
    const runs = await all(`/v1/evals/${ev.id}/runs`);
    rows.push(h("tr", { dataset: { eval: ev.id } }, h("td", {}, h("a", { href: `#/evals/${ev.id}` }, ev.name || ev.id)),
      h("td", {}, (ev.metadata || {}).job_id ? h("a", { href: `#/jobs/${ev.metadata.job_id}` }, ev.metadata.job_id) : "—"),
      h("td", {}, runs.map((r) => h("div", {}, badge(r.status), " ", h("span", { class: "mono" }, r.model), " ",
        scores(r)))), h("td", {}, when(ev.created_at))));
  }
  mount(view, h("h1", {}, "Evaluation"), h("section", { class: "card wide" },
    table(["Eval", "Job", "Runs", "Created"], rows, "No evaluation yet: a job with held-out records makes one.")));
}

function answer(item) {
  return item ? ((item.sample.output || [])[0] || {}).content || "" : "";
}

function meanScores(items) {
  const sums = {};
  for (const it of items) for (const r of it.results || []) sums[r.name] = (sums[r.name] || 0) + (r.score || 0);
  return Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / Math.max(items.length, 1)]));
}

export async function evalPage(view, evalId) {
  const ev = await get(`/v1/evals/${evalId}`);
  const runs = await all(`/v1/evals/${evalId}/runs`);
  const items = await Promise.all(runs.map((r) => all(`/v1/evals/${evalId}/runs/${r.id}/output_items`, 1000)));
  // a job's evaluation names its runs "tuned: ..." and "base: ..."; otherwise the first two runs are compared
  const order = runs.map((r, i) => i).sort((a, b) => (runs[a].name || "").startsWith("base") - (runs[b].name || "")
    .startsWith("base"));
  const [left, right] = order.length >= 2 ? [order[0], order[1]] : [order[0], null];
  const parts = [h("h1", {}, ev.name || ev.id), h("section", { class: "card wide" }, h("h2", {}, "Runs"),
    table(["Run", "Model", "Status", "Passed", "Mean scores"], runs.map((r, i) => {
      const means = meanScores(items[i]);
      return h("tr", { dataset: { run: r.id } }, h("td", {}, r.name || r.id), h("td", { class: "mono" }, r.model),
        h("td", {}, badge(r.status)), h("td", {}, scores(r)), h("td", {}, Object.entries(means).map(([k, v]) =>
          h("span", { class: "score", dataset: { metric: k } }, `${k} ${num(v, 3)} `))));
    })))];
  if (right !== null) {
    const a = new Map(items[left].map((it) => [it.datasource_item_id, it]));
    const b = new Map(items[right].map((it) => [it.datasource_item_id, it]));
    const ids = [...new Set([...a.keys(), ...b.keys()])].sort((x, y) => x - y);
    const differ = ids.filter((id) => answer(a.get(id)) !== answer(b.get(id)));
    const same = ids.filter((id) => !differ.includes(id));
    parts.push(h("section", { class: "card wide" }, h("h2", {}, `Side by side: ${differ.length} of ${ids.length} items `
      + "differ"), table(["#", "prompt", "reference", runs[left].name || "A", runs[right].name || "B"],
      [...differ, ...same].map((id) => {
        const item = (a.get(id) || b.get(id)).datasource_item || {};
        const status = (it) => (it ? h("div", {}, badge(it.status)) : null);
        return h("tr", { class: differ.includes(id) ? "differs" : "" }, h("td", {}, id), h("td", {}, item.prompt ?? ""),
          h("td", {}, item.reference ?? ""), h("td", {}, answer(a.get(id)), status(a.get(id))),
          h("td", {}, answer(b.get(id)), status(b.get(id))));
      }))));
  }
  mount(view, parts);
}

// Models: fine-tunes with their lineage (base -> parent -> model), deploy, undeploy, merge and delete; deployments
// with their engine and state.
import { del, get, post } from "./api.js";
import { badge, errorBox, h, mount, num, table, when } from "./dom.js";

export function lineage(model, byId) {
  const chain = [model.id];
  let parent = model.parent;
  while (parent && !chain.includes(parent)) {
    chain.unshift(parent);
    parent = byId.has(parent) ? byId.get(parent).parent : null;
  }
  if (model.root && chain[0] !== model.root) chain.unshift(model.root);
  return h("span", { class: "lineage" }, chain.map((m, i) => [i ? " → " : "", h("span", { class: "mono" }, m)]));
}

export async function modelsPage(view) {
  const message = h("div", { id: "models-message" });
  const models = h("div", { id: "models" });
  const deployments = h("div", { id: "deployments" });
  mount(view, h("h1", {}, "Models"), message, h("section", { class: "card wide" }, h("h2", {}, "Fine-tuned models"),
    models), h("section", { class: "card wide" }, h("h2", {}, "Deployments"), deployments));

  async function act(label, fn) {
    message.replaceChildren(h("p", { class: "muted" }, `${label}…`));
    try {
      await fn();
      message.replaceChildren(h("p", { class: "ok" }, `${label}: done`));
    } catch (err) { message.replaceChildren(errorBox(err)); }
    await load();
  }

  async function load() {
    const [list, deps] = await Promise.all([get("/v1/models"), get("/v1/deployments").catch((err) => ({ error: err }))]);
    const tuned = list.data.filter((m) => m.owned_by !== "base");
    const byId = new Map(tuned.map((m) => [m.id, m]));
    const deployed = new Map((deps.data || []).map((d) => [d.model, d]));
    models.replaceChildren(table(["Model", "Lineage", "Parts", "Eval (tuned vs base)", "Created", ""],
      tuned.map((m) => {
        const ev = (m.metrics || {}).evaluation;
        const score = ev && ev.models ? (ev.metrics || []).slice(0, 2).map((k) => `${k} ${num(ev.models.tuned[k], 3)}`
          + ` vs ${num(ev.models.base[k], 3)}`).join("; ") : "—";
        const dep = deployed.get(m.id);
        const enc = encodeURIComponent(m.id);
        return h("tr", { dataset: { model: m.id } },
          h("td", {}, h("div", { class: "mono" }, m.id), m.aliases.length ? h("div", { class: "muted small" },
            `alias: ${m.aliases.join(", ")}`) : null),
          h("td", {}, lineage(m, byId)), h("td", {}, m.parts.join(", ")), h("td", {}, score),
          h("td", {}, when(m.created)),
          h("td", { class: "actions" },
            h("a", { class: "button", href: `#/chat?model=${enc}` }, "Chat"),
            dep ? h("button", { onclick: () => act(`Undeploy ${m.id}`, () => del(`/v1/deployments/${enc}`)) }, "Undeploy")
              : h("button", { onclick: () => act(`Deploy ${m.id}`, () => post("/v1/deployments", { model: m.id,
                wait: true })) }, "Deploy"),
            h("button", { disabled: m.parts.includes("merged"), onclick: () => act(`Merge ${m.id} (queued)`,
              () => post(`/v1/models/${enc}/merge`)) }, "Merge"),
            h("button", { class: "danger", onclick: () => confirm(`Delete ${m.id}? Its adapter and files go.`)
              && act(`Delete ${m.id}`, () => del(`/v1/models/${enc}`)) }, "Delete")));
      }), "No fine-tuned model yet."));
    deployments.replaceChildren(deps.error ? errorBox(deps.error) : table(["Model", "Engine", "State", "Health",
      "Cold start", "Since"], deps.data.map((d) => h("tr", { dataset: { deployment: d.model } },
      h("td", { class: "mono" }, d.model), h("td", {}, d.engine), h("td", {}, badge(d.state)), h("td", {}, d.health),
      h("td", {}, d.cold_start_seconds ? `${d.cold_start_seconds.toFixed(1)} s` : "—"),
      h("td", {}, when(d.ready_at || d.created_at)))), "Nothing is deployed."));
  }
  await load();
}

// Webhooks: endpoints (their events, status and secret hint), adding one (its secret shown once), sending a test
// event, re-enabling a disabled one, and each endpoint's recent deliveries with their attempts.
import { del, get, post } from "./api.js";
import { badge, errorBox, h, mount, table, when } from "./dom.js";

function lastAttempt(d) {
  const a = d.attempts[d.attempts.length - 1];
  if (!a) return "—";
  return a.error ? `${a.error}` : `${a.status_code} in ${a.latency_ms} ms`;
}

export async function webhooksPage(view) {
  const message = h("div", { id: "hooks-message" });
  const endpoints = h("div", { id: "hooks" });
  const deliveries = h("div", { id: "hook-deliveries" });
  const types = (await get("/v1/webhook_event_types")).data;
  const name = h("input", { id: "hook-name", placeholder: "name", "aria-label": "Name" });
  const url = h("input", { id: "hook-url", type: "url", placeholder: "https://…", "aria-label": "URL", required: true });
  const boxes = types.map((t) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: t, checked: t.startsWith("fine_tuning.") }), ` ${t}`));
  const form = h("form", { id: "hook-form", class: "row wrap", onsubmit: (ev) => { ev.preventDefault(); add(); } },
    name, url, h("div", { class: "checks" }, boxes), h("button", { type: "submit", id: "hook-add" }, "Add endpoint"));
  mount(view, h("h1", {}, "Webhooks"), message,
    h("section", { class: "card wide" }, h("h2", {}, "Endpoints"), endpoints, h("h3", {}, "Add an endpoint"), form),
    h("section", { class: "card wide" }, h("h2", {}, "Recent deliveries"), deliveries));
  let shown = null;

  async function act(label, fn) {
    message.replaceChildren(h("p", { class: "muted" }, `${label}…`));
    try {
      const out = await fn();
      message.replaceChildren(h("p", { class: "ok" }, `${label}: ${out || "done"}`));
    } catch (err) { message.replaceChildren(errorBox(err)); }
    await load();
  }

  async function add() {
    const events = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    message.replaceChildren(h("p", { class: "muted" }, "Adding…"));
    try {
      const made = await post("/v1/webhook_endpoints", { name: name.value || url.value, url: url.value,
        event_types: events });
      message.replaceChildren(h("div", { class: "ok", id: "hook-secret" },
        h("p", {}, `Added ${made.id}. Its signing secret, shown only now (verify deliveries with it):`),
        h("code", { class: "mono" }, made.signing_secret)));
      url.value = ""; name.value = "";
      shown = made.id;
    } catch (err) { message.replaceChildren(errorBox(err)); }
    await load();
  }

  async function showDeliveries(id) {
    shown = id;
    const page = await get(`/v1/webhook_endpoints/${encodeURIComponent(id)}/deliveries?limit=20`);
    deliveries.replaceChildren(h("p", { class: "muted" }, `Endpoint ${id}`), table(
      ["Event", "Type", "Status", "Attempts", "Last answer", "Next attempt", "Created"],
      page.data.map((d) => h("tr", { dataset: { delivery: d.id } }, h("td", { class: "mono" }, d.event_id),
        h("td", {}, d.event_type), h("td", {}, badge(d.status)), h("td", {}, String(d.attempts.length)),
        h("td", {}, lastAttempt(d)), h("td", {}, when(d.next_attempt_at)), h("td", {}, when(d.created_at)))),
      "No delivery yet."));
  }

  async function load() {
    const list = await get("/v1/webhook_endpoints?limit=100");
    endpoints.replaceChildren(table(["Name", "URL", "Events", "Status", "Secret", "Created", ""],
      list.data.map((e) => {
        const enc = encodeURIComponent(e.id);
        const test = types.find((t) => e.event_types.includes(t)) || types[0];
        return h("tr", { dataset: { endpoint: e.id } },
          h("td", {}, h("div", {}, e.name), h("div", { class: "mono muted small" }, e.id)),
          h("td", { class: "mono" }, e.url), h("td", { class: "small" }, e.event_types.join(", ")),
          h("td", {}, badge(e.status), e.disabled_reason ? h("div", { class: "muted small" }, e.disabled_reason) : null),
          h("td", { class: "mono" }, e.signing_secret_hint), h("td", {}, when(e.created_at)),
          h("td", { class: "actions" },
            h("button", { class: "test", onclick: () => act(`Send a test ${test} to ${e.name}`, async () => {
              const r = await post(`/v1/webhook_endpoints/${enc}/test`, { event_type: test });
              return `the receiver answered ${r.status_code}`;
            }) }, "Send test"),
            h("button", { class: "deliveries", onclick: () => showDeliveries(e.id) }, "Deliveries"),
            e.status === "disabled" ? h("button", { onclick: () => act(`Re-enable ${e.name}`,
              () => post(`/v1/webhook_endpoints/${enc}`, { enabled: true })) }, "Re-enable") : null,
            h("button", { class: "danger", onclick: () => confirm(`Delete the endpoint ${e.name}?`)
              && act(`Delete ${e.name}`, () => del(`/v1/webhook_endpoints/${enc}`)) }, "Delete")));
      }), "No endpoint yet: add one to be called when jobs and eval runs end."));
    if (shown && list.data.some((e) => e.id === shown)) await showDeliveries(shown);
    else deliveries.replaceChildren(h("p", { class: "muted" }, "Choose an endpoint's Deliveries."));
  }
  await load();
}

// Chat playground: one model, or two side by side, answering the same messages, streamed from
// /v1/chat/completions. A model that is not deployed yet is deployed first, with its cold start shown.
import { ApiError, get, parseJSON, post, raw, sseFrames } from "./api.js";
import { errorBox, h, mount } from "./dom.js";

const DEPLOY_WAIT_MS = 15 * 60 * 1000; // a cold start past this is reported, not waited on forever
const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); reject(new DOMException("left", "AbortError")); },
    { once: true });
});

async function ensureDeployed(model, status, signal) {
  // the list, not GET /v1/deployments/<model>: "not deployed" is not an error (a 404 would be logged as one)
  let dep = (await get("/v1/deployments")).data.find((d) => d.model === model || d.alias === model) || null;
  if (dep && dep.state === "ready") {
    status.textContent = `Ready (${dep.engine})`;
    return;
  }
  const t0 = Date.now();
  if (!dep || dep.state === "failed" || dep.state === "stopped") dep = await post("/v1/deployments", { model });
  while (dep.state === "deploying") {
    if (Date.now() - t0 > DEPLOY_WAIT_MS) {
      throw new Error(`The model server for ${model} is still starting after ${DEPLOY_WAIT_MS / 60000} minutes.`);
    }
    status.textContent = `Starting a ${dep.engine} server for ${model}… ${Math.round((Date.now() - t0) / 1000)} s`;
    await sleep(1000, signal);
    dep = await get(`/v1/deployments/${encodeURIComponent(dep.model)}`);
  }
  if (dep.state !== "ready") {
    throw new Error(`The model server for ${model} did not start: ${(dep.error || {}).message || dep.state}`);
  }
  status.textContent = `Ready (${dep.engine}, cold start ${(dep.cold_start_seconds || 0).toFixed(1)} s)`;
}

async function streamAnswer(model, messages, onDelta, signal) {
  const res = await raw("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages, stream: true, temperature: 0, max_tokens: 256 }), signal });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  for await (const frame of sseFrames(res)) {
    if (frame.data === null) continue;
    if (frame.data === "[DONE]") return;
    const chunk = parseJSON(frame.data);
    if (chunk === null) continue;
    if (chunk.error) throw new Error(chunk.error.message || "the model server failed");
    const delta = ((chunk.choices || [])[0] || {}).delta || {};
    if (delta.content) onDelta(delta.content);
  }
}

function pane(model, signal) {
  const messages = [];
  const log = h("div", { class: "messages" });
  const status = h("p", { class: "muted small status" });
  const el = h("section", { class: "card pane", dataset: { model } }, h("h2", { class: "mono" }, model), status, log);
  let ready = false;
  return {
    el,
    async send(text) {
      messages.push({ role: "user", content: text });
      log.append(h("div", { class: "msg user" }, text));
      const out = h("div", { class: "msg assistant" });
      log.append(out);
      try {
        if (!ready) { await ensureDeployed(model, status, signal); ready = true; }
        let answer = "";
        await streamAnswer(model, messages, (delta) => { answer += delta; out.textContent = answer; }, signal);
        messages.push({ role: "assistant", content: answer });
        out.classList.add("done");
      } catch (err) {
        if (signal.aborted) return; // the page was left: nothing to show
        messages.pop();
        out.replaceWith(errorBox(err));
      }
    },
  };
}

// Leaving the page (its cleanup) aborts every stream and deploy wait it started.
export async function chatPage(view, params) {
  const left = new AbortController();
  const models = (await get("/v1/models")).data;
  const names = [...new Set(models.flatMap((m) => [...(m.aliases || []), m.id]))];
  const pick = (id, value) => h("input", { id, list: "chat-models", value: value || "", placeholder: "model or alias" });
  const first = pick("chat-model", params.get("model") || names[0]);
  const second = pick("chat-compare", params.get("compare") || "");
  const panes = h("div", { class: "panes" });
  const input = h("textarea", { id: "chat-input", rows: 2, placeholder: "Ask something…" });
  const send = h("button", { id: "chat-send", type: "submit" }, "Send");
  let active = [];
  let key = "";
  function setup() {
    const chosen = [first.value.trim(), second.value.trim()].filter(Boolean);
    if (chosen.join("|") === key) return;
    key = chosen.join("|");
    active = chosen.map((model) => pane(model, left.signal));
    panes.replaceChildren(...active.map((p) => p.el));
    panes.classList.toggle("two", active.length === 2);
  }
  first.addEventListener("change", setup);
  second.addEventListener("change", setup);
  const form = h("form", { class: "composer", onsubmit: async (e) => {
    e.preventDefault();
    setup();
    const text = input.value.trim();
    if (!text || !active.length) return;
    input.value = "";
    send.disabled = true;
    await Promise.all(active.map((p) => p.send(text)));
    send.disabled = false;
    input.focus();
  } }, input, send);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  mount(view, h("h1", {}, "Chat playground"), h("datalist", { id: "chat-models" }, names.map((n) => h("option",
    { value: n }))), h("div", { class: "row" }, h("label", { class: "field" }, h("span", {}, "Model"), first),
    h("label", { class: "field" }, h("span", {}, "Compare with (optional)"), second)), panes, form,
  models.length ? null : errorBox("No model yet: fine-tune one first."));
  setup();
  return () => left.abort();
}

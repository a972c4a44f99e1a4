// The public API, as the openai client and the CLI call it. With auth on, a 401 asks for an API key once; the key
// is kept in sessionStorage (this tab only) and sent as a bearer token.
const KEY = "sage-ft.api-key";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.param = err.param || null;
    this.code = err.code || null;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  location.reload();
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

let asking = null;
function askForKey(message) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = document.getElementById("auth");
      const input = document.getElementById("auth-key");
      document.getElementById("auth-error").textContent = message || "";
      dialog.addEventListener("close", () => {
        sessionStorage.setItem(KEY, input.value.trim());
        input.value = "";
        asking = null;
        document.getElementById("signout").hidden = false;
        resolve();
      }, { once: true });
      dialog.showModal();
      input.focus();
    });
  }
  return asking;
}

// fetch with the key; a 401 asks for one (again) and retries
export async function raw(path, options = {}) {
  for (;;) {
    const used = apiKey();
    const res = await fetch(path, { ...options, headers: headers(options.headers || {}) });
    if (res.status !== 401) return res;
    const body = await res.json().catch(() => ({}));
    if (apiKey() !== used) continue; // a key was given while this request was out: try it
    await askForKey(used ? (body.error && body.error.message) || "That key was refused." : "");
  }
}

export async function request(method, path, body) {
  const options = { method };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers = { "Content-Type": "application/json" };
  }
  const res = await raw(path, options);
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body === undefined ? {} : body);
export const del = (path) => request("DELETE", path);

// Every page of a list endpoint (after=<last id>), up to `max` items.
export async function all(path, max = 500) {
  const out = [];
  let after = null;
  while (out.length < max) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    out.push(...page.data);
    if (!page.has_more || !page.data.length) break;
    after = page.last_id || page.data[page.data.length - 1].id;
  }
  return out;
}

// The one server-sent-events parser: frames end at a blank line (LF or CRLF), comment lines are skipped, data lines
// are joined. Yields { event, data, id } (data and id null when the frame has none) until the body ends.
export async function* sseFrames(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const out = { event: "message", data: [], id: null };
        for (const line of frame.split(/\r?\n/)) {
          if (!line || line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const name = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (name === "data") out.data.push(val);
          else if (name === "id") out.id = val;
          else if (name === "event") out.event = val;
        }
        yield { event: out.event, data: out.data.length ? out.data.join("\n") : null, id: out.id };
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// JSON, or null for text that is not (a frame a proxy mangled is skipped, not thrown).
export function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// A job's (or run's) events over fetch (EventSource cannot send an Authorization header). Reconnects after a drop
// or a shutdown frame with Last-Event-ID, so nothing is missed or repeated. onEvent(name, data); returns a stop
// function.
export function stream(path, onEvent) {
  let last = null;
  let stopped = false;
  const controller = new AbortController();
  async function run() {
    while (!stopped) {
      try {
        const extra = last === null ? {} : { "Last-Event-ID": String(last) };
        const res = await raw(path, { headers: extra, signal: controller.signal });
        if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
        let ended = false;
        for await (const frame of sseFrames(res)) {
          if (frame.id !== null) last = frame.id;
          const data = frame.data === null ? null : parseJSON(frame.data);
          if (data === null) continue;
          if (frame.event === "end") ended = true;
          if (frame.event !== "shutdown") onEvent(frame.event, data);
        }
        if (ended) return;
      } catch (err) {
        if (stopped || err.name === "AbortError") return;
        if (err instanceof ApiError && err.status < 500) { onEvent("error", { message: err.message }); return; }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  run();
  return () => { stopped = true; controller.abort(); };
}

// The gateway's OpenAPI document, fetched once: the console reads enumerations (job statuses) from the contract
// instead of copying them.
let contractPromise = null;
export function contract() {
  if (!contractPromise) contractPromise = get("/openapi.json").catch((err) => { contractPromise = null; throw err; });
  return contractPromise;
}

export async function jobStatuses() {
  const schemas = (await contract()).components.schemas;
  const status = schemas.FineTuningJob.properties.status;
  return (status.$ref ? schemas[status.$ref.split("/").pop()] : status).enum;
}

// Hash routes: #/jobs, #/jobs/<id>, #/new, #/models, #/evals, #/evals/<eval id>, #/chat?model=<m>, #/webhooks.
// Each page renders into #view and returns a cleanup function (timers, streams) run when the route changes.
import { apiKey, signOut } from "./api.js";
import { errorBox, mount } from "./dom.js";
import { chatPage } from "./chat.js";
import { evalPage, evalsPage } from "./evals.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { modelsPage } from "./models.js";
import { newJobPage } from "./newjob.js";
import { webhooksPage } from "./webhooks.js";

const routes = [
  [/^#\/jobs\/(ftjob-[0-9a-f]+)$/, (view, m) => jobPage(view, m[1])],
  [/^#\/jobs$/, (view) => jobsPage(view)],
  [/^#\/new$/, (view) => newJobPage(view)],
  [/^#\/models$/, (view) => modelsPage(view)],
  [/^#\/evals\/(eval-[0-9a-f]+)$/, (view, m) => evalPage(view, m[1])],
  [/^#\/evals$/, (view) => evalsPage(view)],
  [/^#\/chat$/, (view, m, params) => chatPage(view, params)],
  [/^#\/webhooks$/, (view) => webhooksPage(view)],
];

let cleanup = null;
let current = 0;

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const mine = ++current;
  const [path, query] = (location.hash || "#/jobs").split("?");
  const params = new URLSearchParams(query || "");
  // a fresh element per route: a page still loading when the user moves on renders into a detached node
  const view = document.createElement("div");
  document.getElementById("view").replaceChildren(view);
  const section = path.split("/")[1] || "jobs";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.nav === section);
  for (const [pattern, page] of routes) {
    const match = path.match(pattern);
    if (match) {
      try {
        const done = (await page(view, match, params)) || null;
        if (mine === current) cleanup = done;
        else if (done) done(); // the user moved on while it loaded
      } catch (err) {
        mount(view, errorBox(err));
      }
      return;
    }
  }
  location.hash = "#/jobs";
}

document.getElementById("signout").hidden = !apiKey();
document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();

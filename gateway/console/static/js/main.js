// Sign-in, navigation and the page router (#/buckets, #/b/BUCKET/PREFIX, ...).
import { api, state } from "./api.js";
import { bucketList, browse } from "./buckets.js";
import { uploads } from "./upload.js";
import { system } from "./admin.js";
import { networks, vms } from "./compute.js";
import { volumes } from "./volumes.js";
import { cost, usage } from "./usage.js";
import { h, toast } from "./util.js";

const view = document.getElementById("view");
const signInForm = document.getElementById("sign-in");
let cleanup = [];

function showSignIn(message) {
  state.session = null;
  document.body.classList.remove("signed-in");
  signInForm.hidden = false;
  view.hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("sign-in-error").textContent = message || "";
}
state.onSignedOut = (message) => showSignIn(message ? `Signed out: ${message}` : "");

function showApp(session) {
  state.session = session;
  document.body.classList.add("signed-in");
  document.body.classList.toggle("is-admin", !!session.admin);
  signInForm.hidden = true;
  view.hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("who").textContent =
    `${session.user ? `${session.user} @ ` : ""}${session.account_name} (${session.access_key})`;
  uploads.offerResumes();
  route();
}

signInForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    showApp(await api("POST", "session", {
      access_key: document.getElementById("access-key").value.trim(),
      secret_key: document.getElementById("secret-key").value,
    }));
    document.getElementById("secret-key").value = "";
  } catch (err) {
    document.getElementById("sign-in-error").textContent = err.message;
  }
});

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "session"); } catch { /* already ended */ }
  showSignIn("Signed out.");
});

const PAGES = {
  buckets: bucketList, b: browse, volumes, vms, networks, system, usage, cost,
};

export async function route() {
  if (!state.session) return;
  for (const stop of cleanup) stop();
  cleanup = [];
  const parts = (location.hash.replace(/^#\/?/, "") || "buckets").split("/");
  const page = PAGES[parts[0]] || bucketList;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.getAttribute("href") === `#/${parts[0]}`);
  }
  // Each page draws into a box of its own, shown only if no later navigation
  // started meanwhile (a slow page must not replace a newer one).
  const generation = (route.generation = (route.generation || 0) + 1);
  const box = h("div", { class: "page" });
  view.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  let stop = null;
  try {
    stop = await page(box, parts.slice(1).map(decodeURIComponent));
  } catch (err) {
    box.replaceChildren(h("p", { class: "error", id: "page-error" }, err.message));
  }
  const current = generation === route.generation;
  if (current) view.replaceChildren(box);
  if (typeof stop === "function") {
    if (current) cleanup.push(stop);
    else stop();
  }
}
window.addEventListener("hashchange", route);

(async () => {
  try {
    showApp(await api("GET", "session"));
  } catch {
    showSignIn("");
  }
})();

export { toast };

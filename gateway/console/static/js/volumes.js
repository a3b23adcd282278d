// The volumes page: list, create, resize, snapshot, clone, roll back, delete, and
// backups and restores run as admin API jobs (basalt/volume_jobs.py) with progress.
import { admin, s3xml, tags, field } from "./api.js";
import { act, needsRoot } from "./admin.js";
import { bytes, button, h, parseSize, table, when } from "./util.js";

const enc = encodeURIComponent;
const POLL_MS = 500;

// The first bucket the user sees: where a backup goes unless they say otherwise.
async function firstBucket() {
  try {
    const doc = await s3xml("GET", {});
    return tags(doc, doc, "Bucket").map((b) => field(b, "Name"))[0] || "";
  } catch { return ""; }
}

function clock(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function percent(j) {
  if (j.state === "done") return 100;
  if (!j.total_bytes) return null;  // not known yet: an indeterminate bar
  return Math.min(99, Math.floor((j.done_bytes * 100) / j.total_bytes));
}

function jobRow(j, cancel) {
  const pct = percent(j);
  let speed = j.ended ? `took ${clock(j.ended - j.started)}` : "";
  if (j.state === "running" && j.rate) {
    speed = `${bytes(j.rate)}/s${j.eta_seconds !== null ? `, ETA ${clock(j.eta_seconds)}` : ""}`;
  }
  const amount = j.total_bytes !== null ? `${bytes(j.done_bytes)} / ${bytes(j.total_bytes)}` : "";
  return h("tr", { class: `job ${j.state}`, dataset: { job: j.id, state: j.state, percent: pct ?? "" } },
    h("td", {}, j.kind), h("td", {}, j.volume), h("td", { class: "mono" }, j.target),
    h("td", {}, h("progress", { class: "job-bar", max: 100, value: pct }),
      h("span", { class: "job-percent" }, pct === null ? "" : ` ${pct}%`),
      h("div", { class: "muted" }, amount)),
    h("td", { class: "job-rate" }, speed),
    h("td", {}, h("span", { class: "job-state" }, j.state),
      j.error ? h("div", { class: "error job-error" }, j.error) : null),
    h("td", {}, when(j.started * 1000)),
    h("td", {}, j.state === "running" ? button("Cancel", () => cancel(j), { class: "cancel-job" }) : null));
}

export async function volumes(view) {
  if (needsRoot(view)) return undefined;
  const reload = () => volumes(view);
  const [{ doc: all }, { doc: jobs }, bucket] = await Promise.all([
    admin("GET", "volumes", undefined, { snapshots: "true" }),
    admin("GET", "jobs").catch(() => ({ doc: [] })),  // a cluster node serves no jobs yet
    firstBucket()]);
  const name = h("input", { id: "volume-name", placeholder: "name" });
  const size = h("input", { id: "volume-size", placeholder: "10G", size: 6 });
  const passphrase = h("input", { id: "job-passphrase", type: "password", autocomplete: "off",
    placeholder: "passphrase (optional)" });
  const phrased = (body) => (passphrase.value ? { ...body, passphrase: passphrase.value } : body);

  // Jobs: polled every POLL_MS while one runs; when one ends the page is drawn
  // again (a restore's new volume, a backup's snapshot).
  const jobBody = h("tbody", {});
  const jobTable = h("table", { id: "jobs" }, h("thead", {}, h("tr", {},
    ["Job", "Volume", "Target", "Progress", "Rate", "State", "Started", ""].map((t) => h("th", {}, t)))), jobBody);
  let timer = null;
  let running = new Set(jobs.filter((j) => j.state === "running").map((j) => j.id));
  const stop = () => { clearTimeout(timer); timer = null; };
  const cancel = (j) => act(() => admin("DELETE", `jobs/${enc(j.id)}`), poll, `job ${j.id} cancelled`);
  const draw = (list) => jobBody.replaceChildren(...list.slice().reverse().map((j) => jobRow(j, cancel)));
  const later = () => { timer = setTimeout(() => poll().catch(later), POLL_MS); };
  async function poll() {
    stop();
    if (!jobTable.isConnected) return;  // another page (or a newer drawing of this one)
    const { doc } = await admin("GET", "jobs");
    const now = new Set(doc.filter((j) => j.state === "running").map((j) => j.id));
    const ended = [...running].some((id) => !now.has(id));
    running = now;
    draw(doc);
    if (ended) await reload();
    else if (now.size) later();
  }
  draw(jobs);

  const rows = all.map((v) => {
    const cells = [h("td", {}, v.name), h("td", { class: "num" }, bytes(v.size)),
      h("td", { class: "num" }, bytes(v.allocated)), h("td", {}, v.origin || ""),
      h("td", {}, when(v.created_ns / 1e6))];
    const actions = v.snapshot ? [
      button("Clone", () => {
        const target = prompt(`New volume cloned from ${v.name}:`);
        if (target) act(() => admin("POST", `volumes/${enc(v.name)}/clone`, { name: target }), reload, `cloned to ${target}`);
      }, { class: "clone" }),
      button("Roll back", () => {
        if (confirm(`Return ${v.name.split("@")[0]} to ${v.name}? Later writes are lost.`)) {
          act(() => admin("POST", `volumes/${enc(v.name)}/rollback`), reload, "rolled back");
        }
      }, { class: "rollback" }),
      button("Delete", () => confirm(`Delete snapshot ${v.name}?`)
        && act(() => admin("DELETE", `volumes/${enc(v.name)}`), reload, "deleted"), { class: "danger" }),
    ] : [
      button("Snapshot", () => {
        const snap = prompt(`Snapshot name for ${v.name}:`, `s${Date.now()}`);
        if (snap) act(() => admin("POST", `volumes/${enc(v.name)}/snapshots`, { snapshot: snap }), reload, `snapshot ${snap} taken`);
      }, { class: "snapshot" }),
      button("Back up", () => {
        const to = prompt(`Back ${v.name} up to (incremental after the first):`, `s3://${bucket || "BUCKET"}/${v.name}`);
        if (to) act(() => admin("POST", `volumes/${enc(v.name)}/backup`, phrased({ to: to.trim() })), poll, `backup of ${v.name} started`);
      }, { class: "backup" }),
      button("Resize", () => {
        const to = prompt(`New size of ${v.name}:`, bytes(v.size).replace(" ", ""));
        if (to) act(() => admin("PATCH", `volumes/${enc(v.name)}`, { size: parseSize(to) }), reload, "resized");
      }, { class: "resize" }),
      button("Delete", () => confirm(`Delete volume ${v.name} and its data?`)
        && act(() => admin("DELETE", `volumes/${enc(v.name)}`), reload, "deleted"), { class: "danger" }),
    ];
    return h("tr", { dataset: { volume: v.name }, class: v.snapshot ? "snapshot-row" : "" },
      cells, h("td", {}, actions));
  });
  const from = h("input", { id: "restore-from", size: 34, placeholder: `s3://${bucket || "BUCKET"}/PREFIX[@BACKUP]` });
  const to = h("input", { id: "restore-to", placeholder: "new volume" });
  view.replaceChildren(h("h1", {}, "Volumes"),
    h("div", { class: "bar" }, name, size, button("Create volume", () => act(
      () => admin("POST", "volumes", { name: name.value.trim(), size: parseSize(size.value || "1G") }),
      reload, `volume ${name.value} created`), { id: "create-volume" })),
    table(["Name", "Provisioned", "Allocated", "Origin", "Created", ""], rows, { id: "volumes" }),
    h("h2", {}, "Backups and restores"),
    h("div", { class: "bar", id: "restore-form" }, "Restore ", from, " onto ", to,
      button("Restore", () => act(() => admin("POST", "volume-restores",
        phrased({ from: from.value.trim(), to: to.value.trim() })), poll, `restore onto ${to.value} started`),
      { id: "restore-start" }), passphrase),
    jobTable,
    h("p", { class: "muted" }, "Each job runs ", h("code", {}, "basalt volume backup|restore"),
      " on the server; jobs are forgotten when it restarts (a backup stopped midway is finished by the next one to the same place)."));
  if (running.size) later();
  return stop;
}

// Volumes, VMs, networks and the system page: the admin API (root credentials),
// presigned like every other request.
import { admin, state } from "./api.js";
import { bytes, button, h, parseSize, table, toast, when } from "./util.js";

const enc = encodeURIComponent;

function needsRoot(view) {
  if (state.session.admin) return false;
  view.replaceChildren(h("p", { class: "error", id: "page-error" },
    "This page is for the root credentials (the admin API)."));
  return true;
}

async function act(work, done, message) {
  try {
    await work();
    if (message) toast(message);
  } catch (err) {
    toast(err.message, "error");
  }
  await done();
}

export async function volumes(view) {
  if (needsRoot(view)) return;
  const reload = () => volumes(view);
  const { doc: all } = await admin("GET", "volumes", undefined, { snapshots: "true" });
  const name = h("input", { id: "volume-name", placeholder: "name" });
  const size = h("input", { id: "volume-size", placeholder: "10G", size: 6 });
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
  view.replaceChildren(h("h1", {}, "Volumes"),
    h("div", { class: "bar" }, name, size, button("Create volume", () => act(
      () => admin("POST", "volumes", { name: name.value.trim(), size: parseSize(size.value || "1G") }),
      reload, `volume ${name.value} created`), { id: "create-volume" })),
    table(["Name", "Provisioned", "Allocated", "Origin", "Created", ""], rows, { id: "volumes" }),
    h("p", { class: "muted" }, "Backups and restores stream the volume through the client: run ",
      h("code", {}, "basalt volume backup NAME --to s3://BUCKET/PREFIX"), " and ",
      h("code", {}, "basalt volume restore s3://BUCKET/PREFIX --to NAME"), "."));
}

async function layer(view, which) {
  const { doc } = await admin("GET", "status");
  const state = (doc.layers || {})[which] || "off: not started by this server";
  if (state !== "on") {
    view.replaceChildren(h("h1", {}, which === "compute" ? "VMs" : "Networks"),
      h("p", { class: "error", id: "layer-off" }, `The ${which} layer is ${state}`));
    return false;
  }
  return true;
}

export async function vms(view, [open]) {
  if (needsRoot(view) || !(await layer(view, "compute"))) return;
  const reload = () => vms(view);
  const { doc: list } = await admin("GET", "vms");
  const f = {
    name: h("input", { placeholder: "name", id: "vm-name" }),
    volume: h("input", { placeholder: "volume", id: "vm-volume" }),
    network: h("input", { placeholder: "network", id: "vm-network" }),
    memory: h("input", { placeholder: "256M", size: 6 }),
    cpus: h("input", { placeholder: "1", size: 3 }),
  };
  const rows = list.map((vm) => h("tr", { dataset: { vm: vm.name } },
    h("td", {}, vm.name), h("td", {}, vm.state || ""), h("td", {}, vm.volume || ""),
    h("td", {}, vm.network || ""), h("td", {}, (vm.addresses || vm.ip || "").toString()),
    h("td", {},
      ["start", "stop", "reboot"].map((op) => button(op, () => act(
        () => admin("POST", `vms/${enc(vm.name)}/${op}`, {}), reload, `${vm.name}: ${op}`))),
      button("Console", () => { location.hash = `#/vms/${enc(vm.name)}`; }, { class: "open-console" }),
      button("Delete", () => confirm(`Delete VM ${vm.name}?`)
        && act(() => admin("DELETE", `vms/${enc(vm.name)}`), reload, "deleted"), { class: "danger" }))));
  const term = h("pre", { id: "serial-console", class: "terminal" });
  view.replaceChildren(h("h1", {}, "VMs"),
    h("div", { class: "bar" }, Object.values(f), button("Create VM", () => act(() => admin("POST", "vms", {
      name: f.name.value, volume: f.volume.value, network: f.network.value,
      memory: f.memory.value || "256M", cpus: Number(f.cpus.value || 1), start: true,
    }), reload, "VM created"))),
    table(["Name", "State", "Volume", "Network", "Address", ""], rows, { id: "vms" }),
    open ? h("h2", {}, `Serial console of ${open}`) : "", open ? term : "");
  if (!open) return undefined;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/_basalt/console/api/vms/${enc(open)}/console?csrf=${enc(state.session.csrf)}`);
  ws.onmessage = (e) => {
    term.textContent = (term.textContent + e.data.replace(/\r/g, "")).slice(-200000);
    term.scrollTop = term.scrollHeight;
  };
  ws.onclose = () => { term.dataset.closed = "1"; };
  return () => ws.close();
}

export async function networks(view) {
  if (needsRoot(view) || !(await layer(view, "network"))) return;
  const reload = () => networks(view);
  const { doc: list } = await admin("GET", "networks");
  const name = h("input", { placeholder: "name", id: "net-name" });
  const subnet = h("input", { placeholder: "10.10.0.0/24", id: "net-subnet" });
  const nat = h("input", { type: "checkbox", id: "net-nat" });
  const rows = list.map((n) => h("tr", { dataset: { network: n.name } },
    h("td", {}, n.name), h("td", {}, n.subnet || ""), h("td", {}, n.nat ? "NAT" : "isolated"),
    h("td", {}, button("Delete", () => confirm(`Delete network ${n.name}?`)
      && act(() => admin("DELETE", `networks/${enc(n.name)}`), reload, "deleted"), { class: "danger" }))));
  view.replaceChildren(h("h1", {}, "Networks"),
    h("div", { class: "bar" }, name, subnet, h("label", {}, nat, " NAT"),
      button("Create network", () => act(() => admin("POST", "networks",
        { name: name.value, subnet: subnet.value, nat: nat.checked }), reload, "network created"))),
    table(["Name", "Subnet", "Mode", ""], rows, { id: "networks" }));
}

// Prometheus text: {name: [{labels, value}]} for the families the page draws.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = /^(basalt_s3_[a-z_]+?)(\{.*\})? ([0-9.e+-]+|NaN)$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="([^"]*)"/g)) labels[k] = v;
    (out[m[1]] ||= []).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function sum(family, filter = () => true) {
  return (family || []).filter((s) => filter(s.labels)).reduce((n, s) => n + s.value, 0);
}

export async function system(view) {
  if (needsRoot(view)) return undefined;
  const { doc } = await admin("GET", "status");
  const disks = (doc.disks || []).map((d) => h("tr", { class: `disk ${d.state}`, dataset: { state: d.state } },
    h("td", {}, d.position ?? ""), h("td", { class: "mono" }, d.path || ""), h("td", {}, d.state),
    h("td", {}, d.reason || ""), h("td", { class: "num" }, d.used_bytes !== undefined ? bytes(d.used_bytes) : ""),
    h("td", { class: "num" }, d.free_bytes !== undefined ? bytes(d.free_bytes) : "")));
  const cap = doc.capacity || {};
  const heal = doc.heal || {};
  const layers = Object.entries(doc.layers || {}).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v)));
  const rates = h("div", { id: "rates" });
  const chartBox = h("div", { id: "rate-chart" });
  view.replaceChildren(h("h1", {}, "System"),
    h("p", { id: "health" }, `Status ${doc.status}, version ${doc.version}, up ${Math.round(doc.uptime_seconds)} s, erasure coding ${doc.ec} (write quorum ${doc.write_quorum})`),
    h("h2", {}, "Disks"), table(["#", "Path", "State", "Why", "Used", "Free"], disks, { id: "disks" }),
    h("h2", {}, "Capacity"),
    h("p", {}, `Raw ${bytes(cap.raw)}, free ${bytes(cap.free)}; holds ${bytes(cap.objects)} as objects, ${bytes(cap.volumes)} as volumes (${cap.volume_replicas} replicas)`),
    h("h2", {}, "Heal"),
    h("p", { id: "heal" }, `Healing disks: ${(heal.healing_disks || []).join(", ") || "none"}; offline: ${(heal.offline_disks || []).join(", ") || "none"}; `
      + Object.entries(heal).filter(([k]) => !k.endsWith("_disks")).map(([k, v]) => `${k} ${v}`).join(", ")),
    h("h2", {}, "Layers"), table(["Layer", "State"], layers, { id: "layers" }),
    h("h2", {}, "Requests"), rates, chartBox);
  // Request rate and mean latency from /_basalt/metrics, sampled every 2 seconds.
  const samples = { t: [], rate: [], latency: [] };
  let last = null;
  let plot = null;
  const sample = async () => {
    const r = await fetch("/_basalt/metrics", { credentials: "omit" });
    const m = parseMetrics(await r.text());
    const now = { t: Date.now() / 1000, n: sum(m.basalt_s3_requests_total),
      s: sum(m.basalt_s3_request_duration_seconds_sum), c: sum(m.basalt_s3_request_duration_seconds_count) };
    const byOp = {};
    for (const s of m.basalt_s3_requests_total || []) byOp[s.labels.op] = (byOp[s.labels.op] || 0) + s.value;
    rates.replaceChildren(table(["Operation", "Requests (since start)"], Object.entries(byOp)
      .sort((a, b) => b[1] - a[1]).slice(0, 12).map(([op, n]) => h("tr", {}, h("td", {}, op), h("td", { class: "num" }, n)))));
    if (last && now.t > last.t) {
      samples.t.push(now.t);
      samples.rate.push((now.n - last.n) / (now.t - last.t));
      samples.latency.push(now.c > last.c ? ((now.s - last.s) / (now.c - last.c)) * 1000 : null);
      for (const k of Object.keys(samples)) samples[k] = samples[k].slice(-150);
      const data = [samples.t, samples.rate, samples.latency];
      if (!plot && window.uPlot) {
        plot = new window.uPlot({ width: Math.min(900, view.clientWidth || 800), height: 240,
          series: [{}, { label: "requests/s", stroke: "#2a6fdb" },
            { label: "mean latency (ms)", stroke: "#d9822b", scale: "ms" }],
          axes: [{}, { label: "req/s" }, { side: 1, scale: "ms", label: "ms", grid: { show: false } }] },
        data, chartBox);
      } else if (plot) plot.setData(data);
    }
    last = now;
  };
  await sample();
  const timer = setInterval(() => sample().catch(() => {}), 2000);
  return () => { clearInterval(timer); if (plot) plot.destroy(); };
}

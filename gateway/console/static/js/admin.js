// The admin pages' shared pieces and the system page: the admin API (root
// credentials), presigned like every other request.
import { admin, state } from "./api.js";
import { bytes, h, table, toast } from "./util.js";

export function needsRoot(view) {
  if (state.session.admin) return false;
  view.replaceChildren(h("p", { class: "error", id: "page-error" },
    "This page is for the root credentials (the admin API)."));
  return true;
}

export async function act(work, done, message) {
  try {
    await work();
    if (message) toast(message);
  } catch (err) {
    toast(err.message, "error");
  }
  await done();
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

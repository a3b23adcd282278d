// Usage (metered by the server, /_basalt/v1/usage rows) and cost (priced by
// basalt/billing.py on the server: the same numbers as `basalt bill`).
import { api, state } from "./api.js";
import { bytes, button, h, table } from "./util.js";

const COUNTERS = ["requests_put", "requests_get", "bytes_in", "bytes_out", "byte_hours",
  "provisioned_gb_hours", "allocated_gb_hours", "vcpu_hours", "memory_gb_hours", "nat_bytes"];

function chart(box, title, days, series) {
  if (!window.uPlot || !days.length) return;
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  // eslint-disable-next-line no-new
  new window.uPlot({ title, width: Math.min(900, box.clientWidth || 800), height: 220,
    series: [{}, ...series.map(([label, , color]) => ({ label, stroke: color, fill: `${color}22` }))] },
  [xs, ...series.map(([, values]) => values)], box);
}

function account(view) {
  return state.session.admin ? h("input", { id: "usage-account", placeholder: "account (all)" }) : null;
}

export async function usage(view) {
  const month = new Date().toISOString().slice(0, 7);
  const since = h("input", { type: "date", id: "usage-since", value: `${month}-01` });
  const until = h("input", { type: "date", id: "usage-until" });
  const by = h("select", { id: "usage-by" }, ["bucket", "volume", "vm", "network", "account"]
    .map((k) => h("option", { value: k }, k)));
  const who = account(view);
  const out = h("div", { id: "usage-out" });
  const show = async () => {
    const q = new URLSearchParams({ since: since.value, by: "day" });
    if (until.value) q.set("until", until.value);
    if (who && who.value) q.set("account", who.value);
    const days = await api("GET", `usage?${q}`);
    q.set("by", by.value);
    const rows = await api("GET", `usage?${q}`);
    const perDay = {};
    for (const r of days) {
      const d = (perDay[r.day] ||= { day: r.day });
      for (const c of COUNTERS) d[c] = (d[c] || 0) + (r[c] || 0);
    }
    const list = Object.values(perDay).sort((a, b) => a.day.localeCompare(b.day));
    const charts = h("div", { class: "charts" });
    const name = (r) => r.name || r.bucket || r.volume || r.vm || r.network || r.account_name || r.account;
    out.replaceChildren(charts, table(["Account", by.value, "PUT/LIST", "GET/HEAD", "In", "Out", "GB-hours stored"],
      rows.map((r) => h("tr", { class: "usage-row" }, h("td", {}, r.account_name || r.account),
        h("td", {}, name(r)), h("td", { class: "num" }, r.requests_put || 0),
        h("td", { class: "num" }, r.requests_get || 0), h("td", { class: "num" }, bytes(r.bytes_in || 0)),
        h("td", { class: "num" }, bytes(r.bytes_out || 0)),
        h("td", { class: "num" }, ((r.byte_hours || 0) / 1e9).toFixed(3)))), { id: "usage-table" }));
    const a = h("div", {});
    const b = h("div", {});
    charts.append(a, b);
    chart(a, "Requests per day", list.map((d) => d.day), [
      ["PUT/COPY/POST/LIST", list.map((d) => d.requests_put), "#2a6fdb"],
      ["GET/HEAD", list.map((d) => d.requests_get), "#2bb673"]]);
    chart(b, "Bytes per day", list.map((d) => d.day), [
      ["in", list.map((d) => d.bytes_in), "#d9822b"], ["out", list.map((d) => d.bytes_out), "#8e44ad"]]);
  };
  view.replaceChildren(h("h1", {}, "Usage"),
    h("div", { class: "bar" }, "From ", since, " until ", until, " by ", by, who || "",
      button("Show", () => show().catch((e) => out.replaceChildren(h("p", { class: "error" }, e.message))), { id: "usage-show" })),
    out);
  await show();
}

const EXAMPLE = `currency = "USD"
storage_gb_month = 0.02
requests_put_per_1000 = 0.005
requests_get_per_1000 = 0.0004
bytes_out_per_gb = 0.09
volume_gb_month = 0.08
snapshot_gb_month = 0.05
vcpu_hour = 0.01
memory_gb_hour = 0.005
`;
const PRICES = "basalt-console-prices";

export async function cost(view) {
  const prices = h("textarea", { id: "prices", rows: 10, cols: 50 });
  prices.value = localStorage.getItem(PRICES) || EXAMPLE;
  const file = h("input", { type: "file", accept: ".toml,text/plain", id: "prices-file" });
  file.addEventListener("change", async () => { if (file.files[0]) prices.value = await file.files[0].text(); });
  const month = h("input", { type: "month", id: "bill-month", value: new Date().toISOString().slice(0, 7) });
  const who = account(view);
  const out = h("div", { id: "bill" });
  const run = async () => {
    localStorage.setItem(PRICES, prices.value);
    try {
      const doc = await api("POST", "bill", { prices: prices.value, month: month.value,
        account: who ? who.value : undefined });
      const money = (n) => `${n.toFixed(2)} ${doc.currency}`;
      const box = h("div", {});
      out.replaceChildren(h("p", { id: "bill-total" }, `Total for ${doc.month}: `,
        h("strong", { id: "bill-total-amount", dataset: { total: doc.total } }, money(doc.total))), box,
        ...doc.accounts.map((a) => h("section", { class: "bill-account" },
          h("h3", {}, `${a.account_name || a.account}: ${money(a.total)}`),
          table(["Item", "Quantity", "Unit", "Unit price", "Amount"], a.lines.map((l) => h("tr", {},
            h("td", {}, l.description), h("td", { class: "num" }, l.quantity), h("td", {}, l.unit),
            h("td", { class: "num" }, l.unit_price), h("td", { class: "num" }, money(l.amount))))))),
        h("p", { class: "muted" }, doc.note));
      const accounts = doc.accounts.filter((a) => a.total > 0);
      if (window.uPlot && accounts.length) {
        new window.uPlot({ title: "Cost per account", width: Math.min(900, view.clientWidth || 800), height: 200,
          scales: { x: { time: false } },
          axes: [{ values: (u, ticks) => ticks.map((t) => (accounts[t] ? accounts[t].account_name || accounts[t].account : "")) }, {}],
          series: [{}, { label: doc.currency, stroke: "#2a6fdb", fill: "#2a6fdb33",
            paths: window.uPlot.paths.bars({ size: [0.6] }) }] },
        [accounts.map((_, i) => i), accounts.map((a) => a.total)], box);
      }
    } catch (err) { out.replaceChildren(h("p", { class: "error", id: "bill-error" }, err.message)); }
  };
  view.replaceChildren(h("h1", {}, "Cost"),
    h("p", {}, "Paste the operator's price list (flat TOML, as for ", h("code", {}, "basalt bill --prices"), ") or load a file."),
    prices, h("div", { class: "bar" }, file, " Month ", month, who || "",
      button("Price it", run, { id: "bill-run" })), out);
  await run();
}

// The VMs page (with the live serial console) and the networks page.
import { admin, state } from "./api.js";
import { act, needsRoot } from "./admin.js";
import { button, h, table } from "./util.js";

const enc = encodeURIComponent;

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

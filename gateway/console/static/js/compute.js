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
  const term = h("pre", { id: "serial-console", class: "terminal", tabindex: 0 });
  view.replaceChildren(h("h1", {}, "VMs"),
    h("div", { class: "bar" }, Object.values(f), button("Create VM", () => act(() => admin("POST", "vms", {
      name: f.name.value, volume: f.volume.value, network: f.network.value,
      memory: f.memory.value || "256M", cpus: Number(f.cpus.value || 1), start: true,
    }), reload, "VM created"))),
    table(["Name", "State", "Volume", "Network", "Address", ""], rows, { id: "vms" }),
    open ? h("h2", {}, `Serial console of ${open}`) : "",
    open ? h("p", { class: "hint" }, "Click the console and type: keys go to the guest's serial port.") : "",
    open ? term : "");
  if (!open) return undefined;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/_basalt/console/api/vms/${enc(open)}/console?csrf=${enc(state.session.csrf)}`);
  const type = (text) => { if (ws.readyState === WebSocket.OPEN) ws.send(text); };
  ws.onopen = () => { term.dataset.open = "1"; term.focus(); };
  ws.onmessage = (e) => {
    term.textContent = show(term.textContent, e.data).slice(-200000);
    term.scrollTop = term.scrollHeight;
  };
  ws.onclose = () => { term.dataset.closed = "1"; };
  term.addEventListener("keydown", (e) => {
    const text = keyText(e, String(window.getSelection() || ""));
    if (text === null) return;
    e.preventDefault();
    type(text);
  });
  term.addEventListener("paste", (e) => {
    e.preventDefault();
    type(e.clipboardData.getData("text").replace(/\r?\n/g, "\r"));
  });
  return () => ws.close();
}

// What a terminal sends for the keys that are not characters.
const KEYS = {
  Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", Delete: "\x1b[3~",
  ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D",
  Home: "\x1b[H", End: "\x1b[F",
};

// The text a key press types into the guest, or null to leave it to the browser
// (Ctrl+C with a selection copies, Ctrl+V pastes, Alt/Meta shortcuts stay the browser's).
function keyText(e, selection) {
  if (e.isComposing || e.altKey || e.metaKey) return null;
  if (e.ctrlKey) {
    if (!/^[a-z]$/i.test(e.key) || e.key.toLowerCase() === "v") return null;
    if (e.key.toLowerCase() === "c" && selection) return null;
    return String.fromCharCode(e.key.toUpperCase().charCodeAt(0) - 64);  // Ctrl+C: ETX
  }
  if (KEYS[e.key]) return KEYS[e.key];
  return [...e.key].length === 1 ? e.key : null;
}

// The console's text with `chunk` appended as a plain terminal shows it: carriage
// returns, bells and escape sequences (colours, cursor moves) dropped, backspace
// erasing the character before it.
function show(text, chunk) {
  const pieces = chunk.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b[()][A-Za-z0-9]|[\r\x07]/g, "")
    .split("\b");
  let out = text + pieces[0];
  for (const piece of pieces.slice(1)) {
    if (out && !out.endsWith("\n")) out = out.slice(0, -1);
    out += piece;
  }
  return out;
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

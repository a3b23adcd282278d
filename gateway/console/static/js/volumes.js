// The volumes page: list, create, resize, snapshot, clone, roll back, delete.
import { admin } from "./api.js";
import { act, needsRoot } from "./admin.js";
import { bytes, button, h, parseSize, table, when } from "./util.js";

const enc = encodeURIComponent;

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

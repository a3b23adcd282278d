// Buckets and objects, every operation an S3 request presigned as the user.
import { api, s3, s3xml, tags, field, presign } from "./api.js";
import { dropZone, uploads } from "./upload.js";
import { bytes, button, h, table, toast, when } from "./util.js";

const enc = encodeURIComponent;

export async function bucketList(view) {
  const name = h("input", { id: "new-bucket", placeholder: "new-bucket-name" });
  const create = async () => {
    try {
      await s3("PUT", { bucket: name.value.trim() });
      toast(`Bucket ${name.value} created`);
      bucketList(view);
    } catch (err) { toast(err.message, "error"); }
  };
  const goto = h("input", { id: "goto-bucket", placeholder: "bucket name" });
  const head = [h("h1", {}, "Buckets"),
    h("div", { class: "bar" }, name, button("Create bucket", create, { id: "create-bucket" }),
      " or open ", goto, button("Open", () => { location.hash = `#/b/${enc(goto.value.trim())}/`; }))];
  let names = [];
  let listError = null;
  try {
    const doc = await s3xml("GET", {});
    names = tags(doc, doc, "Bucket").map((b) => ({ name: field(b, "Name"), created: field(b, "CreationDate") }));
  } catch (err) { listError = err; }
  const stats = names.length
    ? await api("GET", `bucket-stats?${names.map((b) => `bucket=${enc(b.name)}`).join("&")}`)
    : {};
  const rows = names.map((b) => h("tr", { dataset: { bucket: b.name } },
    h("td", {}, h("a", { href: `#/b/${enc(b.name)}/`, class: "bucket-link" }, b.name)),
    h("td", { class: "num" }, stats[b.name] ? bytes(stats[b.name].bytes) : "—"),
    h("td", { class: "num" }, stats[b.name] ? stats[b.name].objects : "—"),
    h("td", {}, when(b.created)),
    h("td", {}, button("Delete", async () => {
      if (!confirm(`Delete the bucket ${b.name}? It must be empty.`)) return;
      try { await s3("DELETE", { bucket: b.name }); toast(`Bucket ${b.name} deleted`); bucketList(view); }
      catch (err) { toast(err.message, "error"); }
    }, { class: "danger delete-bucket" }))));
  view.replaceChildren(...head,
    listError ? h("p", { class: "error", id: "list-error" }, listError.message)
      : table(["Bucket", "Size", "Objects", "Created", ""], rows, { id: "buckets" }));
}

function crumbs(bucket, prefix) {
  const parts = prefix.split("/").filter(Boolean);
  const out = [h("a", { href: "#/buckets" }, "Buckets"), " / ", h("a", { href: `#/b/${enc(bucket)}/` }, bucket)];
  let at = "";
  for (const p of parts) {
    at += `${p}/`;
    out.push(" / ", h("a", { href: `#/b/${enc(bucket)}/${enc(at)}` }, p));
  }
  return h("div", { class: "crumbs" }, out);
}

export async function browse(view, [bucket, ...rest]) {
  const prefix = rest.join("/");
  const listing = h("div", { id: "listing" });
  const details = h("div", { id: "details" });
  const folder = h("input", { id: "new-folder", placeholder: "folder name" });
  view.replaceChildren(h("h1", {}, bucket), crumbs(bucket, prefix), dropZone(bucket, prefix),
    h("div", { class: "bar" }, folder, button("Open folder", () => {
      location.hash = `#/b/${enc(bucket)}/${enc(prefix + folder.value.replace(/\/*$/, "/"))}`;
    })), listing, details);
  let token = null;
  const more = async (append) => {
    const query = { "list-type": "2", delimiter: "/", prefix, "max-keys": "500" };
    if (append && token) query["continuation-token"] = token;
    let doc;
    try { doc = await s3xml("GET", { bucket, query }); }
    catch (err) { listing.replaceChildren(h("p", { class: "error", id: "list-error" }, err.message)); return; }
    token = field(doc, "IsTruncated") === "true" ? field(doc, "NextContinuationToken") : null;
    const rows = [];
    for (const p of tags(doc, doc, "CommonPrefixes")) {
      const sub = field(p, "Prefix");
      rows.push(h("tr", { class: "folder", dataset: { prefix: sub } },
        h("td", {}, h("a", { href: `#/b/${enc(bucket)}/${enc(sub)}` }, `${sub.slice(prefix.length)}`)),
        h("td", {}, ""), h("td", {}, ""), h("td", {}, "")));
    }
    for (const c of tags(doc, doc, "Contents")) {
      const key = field(c, "Key");
      rows.push(objectRow(bucket, key, prefix, c, details, () => more(false)));
    }
    const body = append ? listing.querySelector("tbody") : null;
    if (body) body.append(...rows);
    else listing.replaceChildren(table(["Name", "Size", "Modified", ""], rows, { id: "objects" }));
    listing.querySelector("#more")?.remove();
    if (token) listing.append(button("More…", () => more(true), { id: "more" }));
  };
  await more(false);
  return uploads.onDone((b) => { if (b === bucket) more(false); });
}

function objectRow(bucket, key, prefix, c, details, refresh) {
  const download = async (event) => {
    event.preventDefault();
    const name = key.split("/").pop();
    const [url] = await presign([{ method: "GET", bucket, key, query: {
      "response-content-disposition": `attachment; filename*=UTF-8''${enc(name)}` } }]);
    const a = h("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
  };
  return h("tr", { class: "object", dataset: { key } },
    h("td", {}, h("a", { href: "#", class: "object-name", onclick: (e) => { e.preventDefault(); showDetails(bucket, key, details); } },
      key.slice(prefix.length))),
    h("td", { class: "num" }, bytes(Number(field(c, "Size")))),
    h("td", {}, when(field(c, "LastModified"))),
    h("td", {},
      h("a", { href: "#", class: "download", onclick: download }, "Download"), " ",
      button("Share", () => showDetails(bucket, key, details, true), { class: "share" }), " ",
      button("Delete", async () => {
        if (!confirm(`Delete ${key}?`)) return;
        try { await s3("DELETE", { bucket, key }); toast(`${key} deleted`); refresh(); }
        catch (err) { toast(err.message, "error"); }
      }, { class: "danger delete-object" })));
}

const EXPIRIES = [["1 hour", 3600], ["1 day", 86400], ["7 days", 604800], ["15 minutes", 900]];

async function showDetails(bucket, key, details, focusShare = false) {
  details.replaceChildren(h("p", {}, "Loading…"));
  const r = await s3("HEAD", { bucket, key, headers: { "x-amz-checksum-mode": "ENABLED" } })
    .catch((err) => err);
  const rows = [];
  if (r instanceof Error) rows.push(h("tr", {}, h("td", {}, "error"), h("td", {}, r.message)));
  else {
    for (const [name, value] of r.headers.entries()) {
      if (/^(content-|etag|last-modified|x-amz-(meta-|checksum|version-id|object-lock|storage|server-side|tagging))/i.test(name)) {
        rows.push(h("tr", {}, h("td", {}, name), h("td", { class: "mono" }, value)));
      }
    }
  }
  const versions = h("div", { id: "versions" });
  try {
    const doc = await s3xml("GET", { bucket, query: { versions: "", prefix: key, "max-keys": "50" } });
    const vrows = tags(doc, doc, "Version").concat(tags(doc, doc, "DeleteMarker"))
      .filter((v) => field(v, "Key") === key)
      .map((v) => h("tr", {}, h("td", { class: "mono" }, field(v, "VersionId")),
        h("td", {}, v.tagName === "DeleteMarker" ? "delete marker" : bytes(Number(field(v, "Size")))),
        h("td", {}, when(field(v, "LastModified"))), h("td", {}, field(v, "IsLatest") === "true" ? "latest" : "")));
    versions.append(h("h3", {}, "Versions"), table(["Version", "Size", "Modified", ""], vrows));
  } catch (err) { versions.append(h("p", { class: "muted" }, `Versions: ${err.message}`)); }
  const lock = h("div", { id: "lock" });
  for (const [what, query] of [["Retention", { retention: "" }], ["Legal hold", { "legal-hold": "" }]]) {
    try {
      const doc = await s3xml("GET", { bucket, key, query });
      lock.append(h("p", {}, `${what}: ${doc.documentElement.textContent.trim() || "none"}`));
    } catch (err) { lock.append(h("p", { class: "muted" }, `${what}: ${err.code === "NoSuchObjectLockConfiguration" || err.code === "InvalidRequest" ? "none" : err.message}`)); }
  }
  const expiry = h("select", { id: "share-expiry" }, EXPIRIES.map(([label, s]) => h("option", { value: s }, label)));
  const link = h("input", { id: "share-link", readonly: true, size: 80 });
  const share = h("div", { class: "share-box" }, h("h3", {}, "Share link"), "Valid for ", expiry, " ",
    button("Create link", async () => {
      const [url] = await presign([{ method: "GET", bucket, key, expires: Number(expiry.value) }]);
      link.value = location.origin + url;
      link.select();
    }, { id: "make-share" }), h("div", {}, link));
  details.replaceChildren(h("h2", {}, key), table(["", ""], rows, { id: "object-headers" }), share, versions, lock);
  if (focusShare) expiry.focus();
}

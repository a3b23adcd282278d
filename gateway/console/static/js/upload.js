// Uploads: many files at once (drag-and-drop or a file picker), each with its own
// progress bar and a total one. Files of MULTIPART bytes or more go up in parts;
// their upload ids are kept in localStorage, so after a page reload the same file
// dropped again continues where it stopped (ListParts tells which parts are in).
import { presign, s3, s3Failure, s3xml, tags, field } from "./api.js";
import { bytes, button, h, toast } from "./util.js";

const PART = 8 * 1024 * 1024;
const MULTIPART = 16 * 1024 * 1024;
const PARALLEL = 3;
const STORE = "basalt-console-uploads";

function pending() {
  try { return JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return {}; }
}
function savePending(all) { localStorage.setItem(STORE, JSON.stringify(all)); }
function fileId(bucket, key, file) { return `${bucket}/${key}|${file.size}|${file.lastModified}`; }

// PUT a body to a presigned URL with upload progress (fetch has none): the ETag.
function put(url, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(body.size);
        resolve(xhr.getResponseHeader("ETag"));
      } else {
        reject(await s3Failure(new Response(xhr.responseText,
          { status: xhr.status, statusText: xhr.statusText })));
      }
    };
    xhr.onerror = () => reject(new Error("network error"));
    xhr.send(body);
  });
}

class Item {
  constructor(list, bucket, key, file) {
    Object.assign(this, { bucket, key, file, sent: 0 });
    this.bar = h("progress", { max: file.size || 1, value: 0 });
    this.status = h("span", { class: "status" }, "waiting");
    this.el = h("li", { class: "item", dataset: { key, bucket, state: "waiting" } },
      h("span", { class: "name" }, key), " ", h("span", { class: "size" }, bytes(file.size)),
      " ", this.bar, " ", this.status);
    list.append(this.el);
  }
  progress(sent) { this.sent = sent; this.bar.value = sent; }
  set(state, text) {
    this.el.dataset.state = state;
    this.status.textContent = text;
    this.el.classList.toggle("error", state === "failed");
  }
}

class Uploads {
  constructor() {
    this.items = [];
    this.queue = [];
    this.running = 0;
    this.listeners = new Set();
  }

  panel() {
    if (!this.el) {
      this.totalBar = h("progress", { id: "upload-total", max: 1, value: 0 });
      this.totalText = h("span", { id: "upload-total-text" });
      this.list = h("ul", { id: "upload-list" });
      this.resumes = h("ul", { id: "upload-resumes" });
      this.el = h("section", { id: "uploads", class: "card", hidden: true },
        h("h2", {}, "Uploads"), h("div", {}, "Total ", this.totalBar, " ", this.totalText),
        this.resumes, this.list,
        button("Clear finished", () => this.clearFinished()));
      document.body.append(this.el);
    }
    this.el.hidden = false;
    return this.el;
  }

  onDone(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  // Interrupted multipart uploads from before a reload: drop the file again to resume.
  offerResumes() {
    const all = pending();
    if (!Object.keys(all).length) return;
    this.panel();
    this.resumes.replaceChildren(...Object.entries(all).map(([id, p]) => h("li",
      { class: "resume", dataset: { id } },
      `Interrupted: ${p.name} → ${p.bucket}/${p.key} (${p.done || 0} of ${p.parts} parts). `
      + "Drop the same file in that folder again to resume. ",
      button("Abort", async () => {
        try {
          await s3("DELETE", { bucket: p.bucket, key: p.key, query: { uploadId: p.uploadId } });
        } catch (err) { toast(err.message, "error"); }
        const now = pending();
        delete now[id];
        savePending(now);
        this.offerResumes();
      }))));
  }

  add(bucket, prefix, files) {
    this.panel();
    for (const file of files) {
      const item = new Item(this.list, bucket, prefix + (file.webkitRelativePath || file.name), file);
      this.items.push(item);
      this.queue.push(item);
    }
    this.total();
    this.pump();
  }

  clearFinished() {
    this.items = this.items.filter((item) => {
      const keep = !["done", "failed"].includes(item.el.dataset.state);
      if (!keep) item.el.remove();
      return keep;
    });
    this.total();
  }

  total() {
    const size = this.items.reduce((n, i) => n + i.file.size, 0);
    const sent = this.items.reduce((n, i) => n + i.sent, 0);
    this.totalBar.max = size || 1;
    this.totalBar.value = sent;
    const done = this.items.filter((i) => i.el.dataset.state === "done").length;
    this.totalText.textContent = `${bytes(sent)} of ${bytes(size)}, ${done} of ${this.items.length} files`;
  }

  async pump() {
    while (this.running < PARALLEL && this.queue.length) {
      // Small files share one presign call; a multipart upload goes alone.
      const batch = [this.queue.shift()];
      while (batch[0].file.size < MULTIPART && batch.length < 20 && this.queue.length
             && this.queue[0].file.size < MULTIPART) batch.push(this.queue.shift());
      this.running += 1;
      this.runBatch(batch).finally(() => { this.running -= 1; this.pump(); });
    }
  }

  async runBatch(batch) {
    if (batch.length === 1 && batch[0].file.size >= MULTIPART) {
      await this.guard(batch[0], () => this.multipart(batch[0]));
      return;
    }
    let urls;
    try {
      urls = await presign(batch.map((i) => ({ method: "PUT", bucket: i.bucket, key: i.key })));
    } catch (err) {
      for (const item of batch) item.set("failed", err.message);
      return;
    }
    for (const [n, item] of batch.entries()) {
      await this.guard(item, async () => {
        item.set("uploading", "uploading");
        await put(urls[n], item.file, (sent) => { item.progress(sent); this.total(); });
      });
    }
  }

  async guard(item, work) {
    try {
      await work();
      item.set("done", item.el.dataset.resumed ? `done (resumed at part ${Number(item.el.dataset.resumed) + 1})` : "done");
      for (const fn of this.listeners) fn(item.bucket);
    } catch (err) {
      item.set("failed", err.message);
    }
    this.total();
  }

  async multipart(item) {
    const { bucket, key, file } = item;
    const id = fileId(bucket, key, file);
    let record = pending()[id];
    const parts = Math.ceil(file.size / PART);
    const etags = {};
    if (record) {
      // ListParts: what the upload already holds (pages of 1000).
      let marker = "0";
      for (;;) {
        const doc = await s3xml("GET", { bucket, key, query: { uploadId: record.uploadId,
          "part-number-marker": marker } });
        for (const p of tags(doc, doc, "Part")) {
          const n = Number(field(p, "PartNumber"));
          const expected = n < parts ? PART : file.size - PART * (parts - 1);
          if (Number(field(p, "Size")) === expected) etags[n] = field(p, "ETag");
        }
        if (field(doc, "IsTruncated") !== "true") break;
        marker = field(doc, "NextPartNumberMarker");
      }
      item.el.dataset.resumed = String(Object.keys(etags).length);
      this.offerResumes();
    } else {
      item.set("uploading", "starting");
      const doc = await s3xml("POST", { bucket, key, query: { uploads: "" } });
      record = { bucket, key, name: file.name, size: file.size, parts,
        uploadId: field(doc, "UploadId"), done: 0 };
      const all = pending();
      all[id] = record;
      savePending(all);
    }
    const sentOf = {};
    for (const n of Object.keys(etags)) sentOf[n] = n < parts ? PART : file.size - PART * (parts - 1);
    const update = () => {
      item.progress(Object.values(sentOf).reduce((a, b) => a + b, 0));
      this.total();
    };
    update();
    item.set("uploading", `uploading ${parts} parts`);
    const todo = [];
    for (let n = 1; n <= parts; n += 1) if (!etags[n]) todo.push(n);
    const urls = await presign(todo.map((n) => ({ method: "PUT", bucket, key, expires: 3600,
      query: { partNumber: String(n), uploadId: record.uploadId } })));
    const queue = todo.map((n, i) => [n, urls[i]]);
    const worker = async () => {
      while (queue.length) {
        const [n, url] = queue.shift();
        const blob = file.slice((n - 1) * PART, Math.min(n * PART, file.size));
        etags[n] = await put(url, blob, (sent) => { sentOf[n] = sent; update(); });
        const all = pending();
        if (all[id]) { all[id].done = Object.keys(etags).length; savePending(all); }
      }
    };
    await Promise.all([worker(), worker()]);
    const body = "<CompleteMultipartUpload>" + Object.keys(etags).map(Number).sort((a, b) => a - b)
      .map((n) => `<Part><PartNumber>${n}</PartNumber><ETag>${etags[n].replace(/[<&>]/g, "")}</ETag></Part>`)
      .join("") + "</CompleteMultipartUpload>";
    const done = await s3("POST", { bucket, key, query: { uploadId: record.uploadId }, body });
    const text = await done.text();
    if (text.includes("<Error>")) {
      throw await s3Failure(new Response(text, { status: 500 }));
    }
    const all = pending();
    delete all[id];
    savePending(all);
    this.offerResumes();
  }
}

export const uploads = new Uploads();

// A drop zone and a file picker that upload into bucket/prefix.
export function dropZone(bucket, prefix) {
  const input = h("input", { type: "file", multiple: true, id: "file-input" });
  const zone = h("div", { id: "drop-zone", class: "drop" },
    `Drop files here to upload them to ${bucket}/${prefix}, or `, input);
  input.addEventListener("change", () => {
    uploads.add(bucket, prefix, Array.from(input.files));
    input.value = "";
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploads.add(bucket, prefix, Array.from(e.dataTransfer.files));
  });
  return zone;
}

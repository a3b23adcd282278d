// The console's calls: its own JSON API (with the CSRF token), and S3 or admin
// API requests presigned as the signed-in user and sent straight to the gateway,
// which authorizes them like any S3 client's.

export const state = { session: null, onSignedOut: null };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = { "X-Basalt-CSRF": state.session ? state.session.csrf : "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/_basalt/console/api/${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) {
    if (r.status === 401 && state.onSignedOut) state.onSignedOut(doc.message);
    throw new ApiError(r.status, doc.code || r.status, doc.message || r.statusText);
  }
  return doc;
}

export async function presign(requests) {
  return (await api("POST", "presign", { requests })).urls;
}

// An S3 error body (<Error><Code>..</Code><Message>..</Message></Error>) as an ApiError.
async function s3Failure(r) {
  const text = await r.text().catch(() => "");
  const doc = text ? new DOMParser().parseFromString(text, "application/xml") : null;
  const field = (tag) => doc && doc.getElementsByTagName(tag)[0]?.textContent;
  return new ApiError(r.status, field("Code") || r.status, field("Message") || r.statusText);
}

// One S3 request as the user: {bucket, key, query, headers (signed), body, expires}.
export async function s3(method, req = {}) {
  const [url] = await presign([{ method, bucket: req.bucket, key: req.key, query: req.query,
    headers: req.headers }]);
  const r = await fetch(url, { method, body: req.body, headers: req.headers,
    credentials: "omit" });
  if (!r.ok) throw await s3Failure(r);
  return r;
}

export { s3Failure };

export async function s3xml(method, req) {
  const r = await s3(method, req);
  return new DOMParser().parseFromString(await r.text(), "application/xml");
}

// The admin API (root only): JSON in, JSON out.
export async function admin(method, path, body, query) {
  const [url] = await presign([{ method, path: `/_basalt/v1/${path}`, query }]);
  const r = await fetch(url, {
    method, credentials: "omit",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = text; }
  if (!r.ok) {
    throw new ApiError(r.status, (doc && doc.code) || r.status, (doc && doc.message) || text);
  }
  return { doc, response: r };
}

export function tags(doc, parent, tag) {
  return Array.from(parent.getElementsByTagName(tag));
}

export function field(el, tag) {
  const found = el.getElementsByTagName(tag)[0];
  return found ? found.textContent : "";
}

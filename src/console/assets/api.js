// The gateway's REST API with the signed-in API key. The key lives in this tab's
// sessionStorage only and travels only in the Authorization header.

const KEY = 'lambda.apiKey';
const NS = 'lambda.namespace';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(v) { if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY); },
  get namespace() { return sessionStorage.getItem(NS) || 'default'; },
  set namespace(v) { sessionStorage.setItem(NS, v || 'default'); },
};

/** An answer of the API that is not a success: status, reason, message and field details. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = body?.error || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.reason = e.reason || '';
    this.details = Array.isArray(e.details) ? e.details : [];
    this.body = body;
  }
}

/** Called when the API answers 401: the key is gone or wrong. */
export const events = { onUnauthorized: () => {} };

function headers(extra) {
  const h = new Headers(extra || {});
  if (session.key) h.set('Authorization', `Bearer ${session.key}`);
  return h;
}

/**
 * One call. Resolves to {status, ok, headers, text, json, ms} whatever the status (the caller
 * of invoke wants to see a 502 too); `api()` below throws on errors instead.
 */
export async function call(method, path, { body, headers: extra, signal } = {}) {
  const h = headers(extra);
  if (body !== undefined && !h.has('Content-Type')) h.set('Content-Type', 'application/json');
  const t0 = performance.now();
  const res = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    signal,
    credentials: 'omit',
    cache: 'no-store',
  });
  const text = await res.text();
  const ms = performance.now() - t0;
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  if (res.status === 401) events.onUnauthorized();
  return { status: res.status, ok: res.ok, headers: res.headers, text, json, ms };
}

/** A call whose non-2xx answer throws an ApiError. */
export async function api(method, path, body) {
  const r = await call(method, path, { body });
  if (!r.ok) throw new ApiError(r.status, r.json);
  return r.json;
}

/** Path-safe segment. */
export const seg = encodeURIComponent;

export const paths = {
  functions: (ns) => `/v1/namespaces/${seg(ns)}/functions`,
  fn: (ns, name) => `/v1/namespaces/${seg(ns)}/functions/${seg(name)}`,
  invoke: (ns, name) => `/v1/namespaces/${seg(ns)}/functions/${seg(name)}/invoke`,
  executions: (ns, name, limit = 20) => `/v1/namespaces/${seg(ns)}/functions/${seg(name)}/executions?limit=${limit}`,
  execution: (ns, id) => `/v1/namespaces/${seg(ns)}/executions/${seg(id)}`,
  fnHistory: (ns, name) => `/v1/namespaces/${seg(ns)}/functions/${seg(name)}/history`,
  poolHistory: (ns, name) => `/v1/namespaces/${seg(ns)}/nodepools/${seg(name)}/history`,
  watch: (ns) => (ns ? `/v1/namespaces/${seg(ns)}/watch` : '/v1/watch'),
};

// A live copy of one kind's objects from the gateway's watch API (Server-Sent Events).
// Read with fetch rather than EventSource, which cannot send the Authorization header: the
// key stays out of the URL. Resumes from the last event id after a broken connection.

import { session, events as apiEvents } from './api.js';
import { keyOf } from './dom.js';

/** Splits an SSE byte stream into events ({event, data, id}). */
export class SseParser {
  constructor(onEvent) {
    this.buf = '';
    this.onEvent = onEvent;
    this.reset();
  }

  reset() { this.ev = { event: 'message', data: [], id: null }; }

  push(text) {
    this.buf += text;
    let i;
    while ((i = this.buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buf.slice(0, i);
      const nl = this.buf[i] === '\r' && this.buf[i + 1] === '\n' ? 2 : 1;
      this.buf = this.buf.slice(i + nl);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.ev.data.length) this.onEvent({ event: this.ev.event, data: this.ev.data.join('\n'), id: this.ev.id });
      this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const c = line.indexOf(':');
    const field = c < 0 ? line : line.slice(0, c);
    let value = c < 0 ? '' : line.slice(c + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.ev.event = value;
    else if (field === 'data') this.ev.data.push(value);
    else if (field === 'id') this.ev.id = value;
  }
}

/**
 * Watches `kind` under `path` (`/v1/watch` or `/v1/namespaces/NS/watch`). `onChange(watch)` is
 * called after every batch of changes once the first list is in; `watch.objects` is a Map of
 * `ns/name` → object; `onState(state)` gets 'connecting', 'live' or 'error'.
 */
export class Watch {
  constructor(path, kind, { onChange = () => {}, onState = () => {}, onError = () => {} } = {}) {
    this.url = `${path}?kind=${encodeURIComponent(kind)}`;
    this.objects = new Map();
    this.synced = false;
    this.onChange = onChange;
    this.onState = onState;
    this.onError = onError;
    this.resourceVersion = null;
    this.stopped = false;
    this.delay = 500;
    this.pending = false;
  }

  start() { this.loop(); return this; }

  stop() {
    this.stopped = true;
    this.abort?.abort();
  }

  async loop() {
    while (!this.stopped) {
      this.onState('connecting');
      try {
        await this.connect();
      } catch (e) {
        if (this.stopped) return;
        this.onState('error');
        if (e?.status === 401 || e?.status === 403) {
          this.onError(e);
          if (e.status === 401) return;
        }
      }
      if (this.stopped) return;
      await new Promise((r) => { setTimeout(r, this.delay); });
      this.delay = Math.min(this.delay * 2, 10000);
    }
  }

  async connect() {
    this.abort = new AbortController();
    const url = this.resourceVersion ? `${this.url}&resourceVersion=${encodeURIComponent(this.resourceVersion)}` : this.url;
    const res = await fetch(url, {
      headers: { Authorization: `Bearer ${session.key}`, Accept: 'text/event-stream' },
      signal: this.abort.signal,
      credentials: 'omit',
      cache: 'no-store',
    });
    if (!res.ok) {
      let body;
      try { body = await res.json(); } catch { body = undefined; }
      if (res.status === 401) apiEvents.onUnauthorized();
      // A resourceVersion the gateway refuses: start over with a full list.
      if (res.status === 400) this.resourceVersion = null;
      const err = new Error(body?.error?.message || `watch answered ${res.status}`);
      err.status = res.status;
      throw err;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser((ev) => this.event(ev));
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
      if (this.synced) this.onState('live');
      this.delay = 500;
    }
    throw new Error('watch stream ended');
  }

  event({ event, data, id }) {
    let body;
    try { body = JSON.parse(data); } catch { return; }
    if (id) this.resourceVersion = id;
    switch (event) {
      case 'RESET': this.objects.clear(); this.synced = false; break;
      case 'ADDED':
      case 'MODIFIED': this.objects.set(keyOf(body.object), body.object); break;
      case 'DELETED': this.objects.delete(keyOf(body.object)); break;
      case 'SYNCED': this.synced = true; this.onState('live'); break;
      case 'ERROR': this.onError(new Error(`${body.key}: ${body.message}`)); return;
      default: return;
    }
    this.schedule();
  }

  // Changes arrive in bursts (a list): render once per frame.
  schedule() {
    if (!this.synced || this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.stopped) this.onChange(this);
    });
  }

  /** The objects sorted by namespace and name. */
  list() {
    return [...this.objects.values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
  }
}

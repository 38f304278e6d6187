// Server-sent events read with fetch and a stream reader (EventSource cannot send an
// Authorization header). LiveStream keeps /api/events open: it reconnects with
// Last-Event-ID, backs off while the node is away, and notices a silent connection.

import { call, isAbort } from './api.js';

const STALL_MS = 45000; // the server sends a keepalive every 15 s
const MAX_BACKOFF_MS = 8000;

/** Incremental text/event-stream parser; calls onEvent({type, id, data}). */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.rest = '';
    this.lastId = null;
    this.start();
  }

  start() {
    this.type = '';
    this.data = [];
  }

  push(text) {
    const lines = (this.rest + text).split('\n');
    this.rest = lines.pop();
    for (const raw of lines) this.line(raw.endsWith('\r') ? raw.slice(0, -1) : raw);
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onEvent({ type: this.type || 'message', id: this.lastId, data: this.data.join('\n') });
      this.start();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
  }
}

/** Read an SSE response body; resolves when it ends, rejects on a broken connection. */
export async function readEvents(response, onEvent, onBytes = () => {}) {
  const parser = new SseParser(onEvent);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    parser.push(value);
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LiveStream {
  /** onEvent({type, id, data}) with data parsed; onState(state, detail). */
  constructor({ onEvent, onState }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastEventId = null;
  }

  /** A snapshot read at applied index `index`: resume from there if nothing newer
   * came (`reset`: from there in any case, the old position is void). */
  noteSnapshot(index, reset = false) {
    if (index === null) return;
    if (reset || this.lastEventId === null || index > this.lastEventId) this.lastEventId = index;
  }

  async run() {
    let backoff = 1000;
    for (;;) {
      const controller = new AbortController();
      let watchdog = null;
      const alive = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), STALL_MS);
      };
      try {
        const headers = { Accept: 'text/event-stream' };
        if (this.lastEventId !== null) headers['Last-Event-ID'] = String(this.lastEventId);
        alive();
        const response = await call('GET', '/api/events', { headers, signal: controller.signal });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          throw new Error(body.error || `HTTP ${response.status}`);
        }
        this.onState('live');
        backoff = 1000;
        await readEvents(response, (event) => this.dispatch(event), alive);
        this.onState('reconnecting', 'the stream ended');
      } catch (error) {
        this.onState('reconnecting', isAbort(error) ? 'no data for a while' : error.message);
      } finally {
        clearTimeout(watchdog);
        controller.abort();
      }
      await pause(backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  dispatch(event) {
    let data = null;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    const id = event.id === null ? null : Number(event.id);
    if (id !== null && Number.isFinite(id) && event.type !== 'reset') this.lastEventId = id;
    this.onEvent({ type: event.type, id, data });
  }
}

// The Raft log as the leader holds it, one page at a time (GET /api/raft/log).
// On the latest page it follows the log as it grows.

import { $, el, fill, number, setText, toast } from './dom.js';
import { getJson } from './api.js';
import { messageOf } from './cluster.js';

const LIMIT = 15;
const FOLLOW_MS = 1000;

export class RaftLogView {
  constructor() {
    this.start = null; // null: the latest page
    this.count = LIMIT;
    this.shown = [0, 0]; // lowest and highest index on the page
    this.last = 0;
    this.first = 1;
    this.loading = false;
    this.followTimer = null;
    $('log-older').addEventListener('click', () => this.page(-1));
    $('log-newer').addEventListener('click', () => this.page(1));
    $('log-latest').addEventListener('click', () => this.goLatest());
  }

  /** The page just before (-1) or after (+1) the one shown. */
  page(direction) {
    const [low, high] = this.shown;
    if (direction < 0) {
      const end = low - 1;
      this.start = Math.max(this.first, end - LIMIT + 1);
      this.count = end - this.start + 1;
    } else if (high + LIMIT >= this.last) {
      this.start = null;
    } else {
      this.start = high + 1;
      this.count = LIMIT;
    }
    this.load();
  }

  goLatest() {
    this.start = null;
    this.load();
  }

  /** A cluster event: on the latest page, read again when the log grew (throttled). */
  onCluster(state) {
    if (this.start !== null || state.log_length === this.last || this.followTimer) return;
    this.followTimer = setTimeout(() => {
      this.followTimer = null;
      this.load();
    }, FOLLOW_MS);
  }

  async load() {
    if (this.loading) return;
    this.loading = true;
    try {
      let start = this.start;
      let count = this.count;
      if (start === null) {
        const probe = await getJson('/api/raft/log?limit=1&start_index=0');
        start = Math.max(probe.data.first_available_index, probe.data.last_log_index - LIMIT + 1, 1);
        count = LIMIT;
      }
      const { data } = await getJson(`/api/raft/log?start_index=${start}&limit=${Math.max(count, 1)}`);
      this.show(data);
    } catch (error) {
      toast(`Could not read the Raft log: ${messageOf(error)}`, 'error');
    } finally {
      this.loading = false;
    }
  }

  show(data) {
    this.last = data.last_log_index;
    this.first = data.first_available_index;
    const entries = [...data.entries].reverse();
    fill(
      $('log-body'),
      entries.map((entry) =>
        el(
          'tr',
          { class: entry.is_committed ? '' : 'uncommitted', dataset: { index: String(entry.index) } },
          el('td', { text: number(entry.index) }),
          el('td', { text: number(entry.term) }),
          el('td', { class: 'type', text: entry.type.replaceAll('_', ' ') }),
          el('td', { text: entry.is_committed ? '✓' : 'not yet' }),
        ),
      ),
    );
    const lowest = data.entries.length ? data.entries[0].index : this.first;
    const highest = data.entries.length ? data.entries[data.entries.length - 1].index : this.last;
    this.shown = [lowest, highest];
    $('log-older').disabled = lowest <= this.first;
    $('log-newer').disabled = highest >= this.last;
    $('log-latest').disabled = this.start === null;
    setText(
      $('log-note'),
      `${number(data.last_log_index)} entries, committed to ${number(data.commit_index)}` +
        (data.first_available_index > 1 ? `; compacted up to ${number(data.first_available_index - 1)}` : ''),
    );
  }
}

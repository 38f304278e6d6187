// The jobs table: newest first, one page at a time (REST limit/page_token), filters,
// live updates from the event stream, cancel buttons.

import { $, el, fill, number, pill, setText, timeAgo, toMs, duration, toast } from './dom.js';
import { getJson, send, isAbort } from './api.js';
import { confirmAction } from './dialogs.js';
import { messageOf } from './cluster.js';

export const PAGE_SIZE = 50;
const MAX_LIVE_ROWS = PAGE_SIZE + 200; // then page 1 is read again
const ACTIVE = new Set(['pending', 'running']);
const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'];

export class JobsView {
  /** onOpen(jobId): a row was clicked; onSnapshot(appliedIndex, reset): a page was read. */
  constructor({ onOpen, onSnapshot }) {
    this.onOpen = onOpen;
    this.onSnapshot = onSnapshot;
    this.rows = new Map(); // job id -> {job, version, tr}
    this.tokens = [''];
    this.page = 0;
    this.next = '';
    this.total = 0;
    this.generation = 0;
    this.buffer = null; // events that arrive while a page is being read
    this.queued = new Map();
    this.frame = null;
    this.rendered = false;
    this.filters = { status: '', worker: '', command: '' };
    this.body = $('jobs-body');

    $('filter-status').addEventListener('change', (e) => this.filter('status', e.target.value));
    $('filter-worker').addEventListener('change', (e) => this.filter('worker', e.target.value));
    let typing = null;
    $('filter-command').addEventListener('input', (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => this.filter('command', e.target.value.trim()), 250);
    });
    $('page-older').addEventListener('click', () => this.goTo(this.page + 1));
    $('page-newer').addEventListener('click', () => this.goTo(this.page - 1));
    this.body.addEventListener('click', (event) => this.clicked(event));
  }

  // ---------------------------------------------------------------- reading pages

  url() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), order: 'desc' });
    const { status, worker, command } = this.filters;
    if (status) params.set('status', status);
    if (worker) params.set('worker', worker);
    if (command) params.set('command', command);
    if (this.tokens[this.page]) params.set('page_token', this.tokens[this.page]);
    return `/api/jobs?${params}`;
  }

  filter(name, value) {
    if (this.filters[name] === value) return;
    this.filters[name] = value;
    this.tokens = [''];
    this.page = 0;
    this.load();
  }

  goTo(page) {
    if (page < 0 || (page > this.page && !this.next)) return;
    if (page > this.page) this.tokens[page] = this.next;
    this.page = page;
    this.load();
  }

  /** Read the current page; `reset`: the event stream lost its place, start over. */
  async load(reset = false) {
    if (reset) {
      this.tokens = [''];
      this.page = 0;
    }
    const generation = ++this.generation;
    this.buffer = [];
    try {
      const { data, headers } = await getJson(this.url());
      if (generation !== this.generation) return;
      const applied = Number(headers.get('X-Applied-Index'));
      this.next = headers.get('X-Next-Page-Token') || '';
      this.total = Number(headers.get('X-Total-Count') || data.length);
      this.show(data, applied);
      const buffered = this.buffer;
      this.buffer = null;
      for (const event of buffered) if (event.id > applied) this.onJob(event.data, event.id);
      this.onSnapshot(applied, reset);
    } catch (error) {
      if (generation !== this.generation || isAbort(error)) return;
      this.buffer = null;
      toast(`Could not read jobs: ${messageOf(error)}`, 'error');
    }
  }

  show(jobs, version) {
    this.rows.clear();
    this.queued.clear();
    const trs = jobs.map((job) => {
      const tr = renderRow(job);
      this.rows.set(job.id, { job, version, tr });
      return tr;
    });
    this.body.replaceChildren(...trs);
    this.afterChange();
    if (!this.rendered) {
      this.rendered = true;
      performance.mark('jobsched:jobs-rendered');
    }
  }

  afterChange() {
    const empty = this.rows.size === 0;
    $('jobs-empty').hidden = !empty;
    const filtered = Object.values(this.filters).some(Boolean);
    $('jobs-empty').textContent = filtered ? 'No jobs match these filters.' : 'No jobs yet. Submit one above.';
    const offset = this.page * PAGE_SIZE;
    setText($('page-label'), empty ? '' : `${number(offset + 1)}–${number(offset + this.rows.size)} of ${number(this.total)}`);
    $('page-newer').disabled = this.page === 0;
    $('page-older').disabled = !this.next;
  }

  // ---------------------------------------------------------------- live updates

  /** A `job` event: the job after a change, at event id `id`. */
  onJob(job, id) {
    if (this.buffer) {
      this.buffer.push({ data: job, id });
      return;
    }
    this.queued.set(job.id, { job, id });
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.applyQueued());
  }

  applyQueued() {
    this.frame = null;
    const queued = [...this.queued.values()];
    this.queued.clear();
    let added = 0;
    for (const { job, id } of queued) {
      const row = this.rows.get(job.id);
      if (row) {
        if (id < row.version) continue;
        const tr = renderRow(job);
        if (!this.matches(job)) tr.classList.add('stale');
        row.tr.replaceWith(tr);
        Object.assign(row, { job, version: id, tr });
      } else if (this.page === 0 && this.matches(job) && this.insert(job, id)) {
        added += 1;
      }
    }
    if (added) {
      this.total += added;
      if (this.rows.size > MAX_LIVE_ROWS) this.load();
    }
    this.afterChange();
  }

  /** Put a job that is new to this page among the newest rows; false when it belongs
   * further down (on a later page). */
  insert(job, version) {
    const created = toMs(job.created_at);
    let before = null; // the first row (from the top) created no later than this job
    for (const tr of this.body.children) {
      const row = this.rows.get(tr.dataset.jobId);
      if (row && toMs(row.job.created_at) <= created) {
        before = tr;
        break;
      }
    }
    if (before === null && this.next) return false;
    const tr = renderRow(job);
    tr.classList.add('fresh');
    this.body.insertBefore(tr, before);
    this.rows.set(job.id, { job, version, tr });
    return true;
  }

  matches(job) {
    const { status, worker, command } = this.filters;
    if (status && job.status !== status) return false;
    if (worker && String(job.assigned_worker) !== worker && String(job.executed_by) !== worker) return false;
    if (command && !job.command.toLowerCase().includes(command.toLowerCase())) return false;
    return true;
  }

  /** Live per-second refresh of running durations. */
  tick() {
    const now = Date.now();
    for (const cell of this.body.querySelectorAll('td[data-since]')) {
      setText(cell, duration(now - Number(cell.dataset.since)));
    }
  }

  // ---------------------------------------------------------------- filters' choices

  setCounts(counts) {
    for (const option of $('filter-status').options) {
      if (!option.value) continue;
      const label = option.value[0].toUpperCase() + option.value.slice(1);
      setText(option, counts && option.value in counts ? `${label} · ${number(counts[option.value])}` : label);
    }
  }

  setWorkers(ids) {
    const select = $('filter-worker');
    const have = [...select.options].slice(1).map((o) => o.value).join(',');
    if (have === ids.join(',')) return;
    const chosen = select.value;
    fill(
      select,
      el('option', { value: '', text: 'Any worker' }),
      ids.map((id) => el('option', { value: String(id), text: `Node ${id}` })),
    );
    select.value = ids.map(String).includes(chosen) ? chosen : '';
  }

  // ---------------------------------------------------------------- clicks

  clicked(event) {
    const button = event.target.closest('button[data-cancel]');
    if (button) {
      event.stopPropagation();
      const row = this.rows.get(button.dataset.cancel);
      if (row) cancelJob(row.job);
      return;
    }
    const tr = event.target.closest('tr[data-job-id]');
    if (tr) this.onOpen(tr.dataset.jobId);
  }
}

export function renderRow(job) {
  const started = toMs(job.started_at);
  const finished = toMs(job.completed_at);
  const took = el('td', { class: 'c-duration' });
  if (job.status === 'running' && started !== null) {
    took.dataset.since = String(started);
    took.textContent = duration(Date.now() - started);
  } else {
    took.textContent = started !== null && finished !== null ? duration(finished - started) : '–';
  }
  const worker = job.executed_by || job.assigned_worker;
  return el(
    'tr',
    { dataset: { jobId: job.id, status: job.status } },
    el('td', { class: 'c-status' }, pill(STATUSES.includes(job.status) ? job.status : 'pending')),
    el('td', { class: 'c-id', title: job.id, text: job.id.slice(0, 8) }),
    el('td', { class: 'c-command', title: job.command, text: job.command }),
    el('td', { class: 'c-worker', text: worker ? `node ${worker}` : '–' }),
    el('td', { class: 'c-attempts', text: job.attempts ? String(job.attempts) : '–' }),
    el('td', { class: 'c-created' }, timeAgo(toMs(job.created_at))),
    took,
    el(
      'td',
      { class: 'c-actions' },
      ACTIVE.has(job.status)
        ? el('button', { type: 'button', class: 'small', dataset: { cancel: job.id }, text: 'Cancel' })
        : null,
    ),
  );
}

/** Ask, then cancel; the table learns the outcome from the event stream. */
export async function cancelJob(job) {
  const ok = await confirmAction({
    title: 'Cancel this job?',
    message: `${job.status === 'running' ? 'Running' : 'Pending'} job ${job.id.slice(0, 8)}: ${job.command}`,
    confirmLabel: 'Cancel job',
    danger: true,
  });
  if (!ok) return false;
  try {
    await send('DELETE', `/api/jobs/${encodeURIComponent(job.id)}`);
    toast(`Cancelled ${job.id.slice(0, 8)}`);
    return true;
  } catch (error) {
    toast(`Cancel failed: ${messageOf(error)}`, 'error');
    return false;
  }
}

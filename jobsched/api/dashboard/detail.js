// One job in a side drawer: command, image, timings, attempt history, output and
// error. While it runs, its output is followed live from
// GET /api/jobs/{id}/output?follow=1 when the node offers that route (API.md §4).

import { $, el, fill, pill, setText, timeAgo, toMs, duration, absolute, number, toast } from './dom.js';
import { call, getJson, isAbort } from './api.js';
import { readEvents } from './events.js';
import { cancelJob } from './jobs.js';
import { messageOf } from './cluster.js';

const ACTIVE = new Set(['pending', 'running']);
const MAX_LIVE_CHARS = 1 << 20;
let followAvailable = true; // false once the node answered that it has no such route

export class JobDetail {
  constructor() {
    this.dialog = $('job-dialog');
    this.jobId = null;
    this.job = null;
    this.version = -1;
    this.follow = null;
    $('job-close').addEventListener('click', () => this.dialog.close());
    this.dialog.addEventListener('click', (event) => {
      if (event.target === this.dialog) this.dialog.close(); // the backdrop
    });
    this.dialog.addEventListener('close', () => this.closed());
    $('job-cancel').addEventListener('click', () => this.job && cancelJob(this.job));
  }

  async open(jobId) {
    this.stopFollowing();
    this.jobId = jobId;
    this.job = null;
    this.version = -1;
    setText($('job-title'), jobId);
    for (const id of ['job-command', 'job-output', 'job-error', 'job-output-note']) setText($(id), '');
    fill($('job-facts'));
    $('job-status').replaceChildren();
    $('job-status').className = 'pill';
    $('job-cancel').hidden = true;
    if (!this.dialog.open) this.dialog.showModal();
    try {
      const { data, headers } = await getJson(`/api/jobs/${encodeURIComponent(jobId)}`);
      if (this.jobId === jobId) this.show(data, Number(headers.get('X-Applied-Index')));
    } catch (error) {
      if (this.jobId === jobId) {
        toast(`Could not read job: ${messageOf(error)}`, 'error');
        this.dialog.close();
      }
    }
  }

  closed() {
    this.stopFollowing();
    this.jobId = null;
    this.job = null;
  }

  /** A `job` event: redraw when it is the open job and not older than what we show. */
  onJob(job, id) {
    if (job.id === this.jobId && this.job && id >= this.version) this.show(job, id);
  }

  show(job, version) {
    this.job = job;
    this.version = version;
    $('job-status').replaceWith(Object.assign(pill(job.status), { id: 'job-status' }));
    setText($('job-command'), job.command);
    $('job-cancel').hidden = !ACTIVE.has(job.status);
    this.showFacts(job);
    this.showAttempts(job.attempt_history);
    const finished = !ACTIVE.has(job.status);
    if (finished) {
      this.stopFollowing();
      setText($('job-output'), job.output || '');
      setText($('job-output-note'), job.output_truncated ? '(truncated)' : '');
      setText($('job-error'), job.error || '');
      $('job-error-section').hidden = !job.error;
    } else {
      $('job-error-section').hidden = !job.error;
      setText($('job-error'), job.error || '');
      if (job.status === 'running') this.startFollowing(job.id);
      else setText($('job-output-note'), '(waiting for a worker)');
    }
  }

  showFacts(job) {
    const created = toMs(job.created_at);
    const started = toMs(job.started_at);
    const finished = toMs(job.completed_at);
    const worker = job.executed_by || job.assigned_worker;
    fill(
      $('job-facts'),
      fact('image', job.image || 'default'),
      fact('worker', worker ? `node ${worker}` : '–'),
      fact('attempts', job.attempts ? number(job.attempts) : '–'),
      fact('created', timeAgo(created)),
      fact('started', started === null ? '–' : absolute(started)),
      fact('finished', finished === null ? '–' : absolute(finished)),
      fact('took', started !== null && finished !== null ? duration(finished - started) : '–'),
      fact('exit code', job.exit_code === null || job.exit_code === undefined ? '–' : String(job.exit_code)),
      fact('timeout', job.timeout_seconds ? `${job.timeout_seconds} s` : '–'),
    );
  }

  showAttempts(history) {
    const rows = Array.isArray(history) ? history : [];
    $('job-attempts-section').hidden = rows.length === 0;
    fill(
      $('job-attempts'),
      rows.map((a) =>
        el(
          'tr',
          {},
          el('td', { text: String(a.attempt ?? '–') }),
          el('td', { text: a.worker ? `node ${a.worker}` : '–' }),
          el('td', { text: a.started_at_ms ? absolute(a.started_at_ms) : '–' }),
          el('td', { text: a.finished_at_ms ? absolute(a.finished_at_ms) : '–' }),
          el('td', { text: a.started_at_ms && a.finished_at_ms ? duration(a.finished_at_ms - a.started_at_ms) : '–' }),
          el(
            'td',
            {},
            a.outcome ? pill(String(a.outcome), 'outcome') : '–',
            a.late ? el('span', { class: 'tag warn', text: 'late' }) : null,
          ),
        ),
      ),
    );
  }

  // ---------------------------------------------------------------- live output

  async startFollowing(jobId) {
    if (this.follow || !followAvailable) {
      if (!followAvailable) setText($('job-output-note'), '(shown when the job finishes)');
      return;
    }
    const controller = new AbortController();
    this.follow = controller;
    const output = $('job-output');
    const error = $('job-error');
    setText($('job-output-note'), '(live)');
    try {
      const response = await call('GET', `/api/jobs/${encodeURIComponent(jobId)}/output?follow=1`, {
        headers: { Accept: 'text/event-stream' },
        signal: controller.signal,
      });
      if (response.status === 404 || response.status === 405) {
        const body = await response.json().catch(() => ({}));
        if (!/job/i.test(body.error || '')) followAvailable = false; // no such route here
        setText($('job-output-note'), '(shown when the job finishes)');
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      output.textContent = '';
      await readEvents(response, (event) => {
        const data = JSON.parse(event.data);
        if (event.type === 'output') {
          const target = data.stream === 'stderr' ? error : output;
          if (data.stream === 'stderr') $('job-error-section').hidden = false;
          target.append(String(data.data ?? ''));
          if (data.skipped) target.append(`\n[${data.skipped} bytes skipped]\n`);
          if (target.textContent.length > MAX_LIVE_CHARS) target.textContent = target.textContent.slice(-MAX_LIVE_CHARS);
          target.scrollTop = target.scrollHeight;
        }
      });
    } catch (failure) {
      if (!isAbort(failure)) setText($('job-output-note'), '(live output interrupted)');
    } finally {
      if (this.follow === controller) this.follow = null;
    }
  }

  stopFollowing() {
    if (this.follow) {
      this.follow.abort();
      this.follow = null;
    }
  }
}

function fact(name, value) {
  return el('div', {}, el('dt', { text: name }), el('dd', {}, value));
}

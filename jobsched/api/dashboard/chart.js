// Jobs submitted and finished per second over the last minute, drawn as SVG from the
// job events this page receives.

import { $, svg, setText } from './dom.js';

const SECONDS = 60;
const WIDTH = 320;
const HEIGHT = 96;
const SEEN_LIMIT = 50000;

export class ThroughputChart {
  constructor() {
    this.submitted = new Array(SECONDS).fill(0);
    this.finished = new Array(SECONDS).fill(0);
    this.second = Math.floor(Date.now() / 1000);
    this.seen = new Map(); // job id -> last status seen, so a repeated event counts once
    this.node = $('chart');
  }

  /** A `job` event. */
  onJob(job) {
    const before = this.seen.get(job.id);
    if (before === job.status) return;
    this.seen.delete(job.id);
    this.seen.set(job.id, job.status);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.keys().next().value);
    this.advance();
    if (before === undefined && job.status === 'pending' && !job.attempts) this.submitted[SECONDS - 1] += 1;
    const terminal = ['completed', 'failed', 'cancelled'];
    if (terminal.includes(job.status) && !terminal.includes(before)) this.finished[SECONDS - 1] += 1;
  }

  advance() {
    const now = Math.floor(Date.now() / 1000);
    const steps = Math.min(now - this.second, SECONDS);
    for (let i = 0; i < steps; i += 1) {
      this.submitted.shift();
      this.submitted.push(0);
      this.finished.shift();
      this.finished.push(0);
    }
    if (now > this.second) this.second = now;
  }

  draw() {
    this.advance();
    // the current second is still filling: draw the complete ones
    const submitted = this.submitted.slice(0, -1);
    const finished = this.finished.slice(0, -1);
    const peak = Math.max(4, ...submitted, ...finished);
    const top = niceCeiling(peak);
    const x = (i) => ((i / (submitted.length - 1)) * WIDTH).toFixed(1);
    const y = (v) => (HEIGHT - 2 - (v / top) * (HEIGHT - 6)).toFixed(1);
    const points = (series) => series.map((v, i) => `${x(i)},${y(v)}`).join(' ');
    const grid = [0.25, 0.5, 0.75].map((f) =>
      svg('line', { class: 'grid', x1: 0, x2: WIDTH, y1: (HEIGHT * f).toFixed(1), y2: (HEIGHT * f).toFixed(1) }),
    );
    this.node.replaceChildren(
      ...grid,
      svg('polygon', { class: 'area submitted', points: `0,${HEIGHT} ${points(submitted)} ${WIDTH},${HEIGHT}` }),
      svg('polyline', { class: 'line submitted', points: points(submitted) }),
      svg('polyline', { class: 'line finished', points: points(finished) }),
    );
    setText($('chart-max'), `${top}/s`);
    setText($('rate-submitted'), rate(submitted));
    setText($('rate-finished'), rate(finished));
  }
}

function rate(series) {
  const recent = series.slice(-5);
  const value = recent.reduce((a, b) => a + b, 0) / recent.length;
  return value >= 10 ? String(Math.round(value)) : value.toFixed(1);
}

function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

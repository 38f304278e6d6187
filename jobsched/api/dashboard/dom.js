// Building the page safely: every value goes in as text or as an attribute value,
// never as HTML (no innerHTML anywhere in the dashboard).

export const $ = (id) => document.getElementById(id);

/** A new element: props set attributes (`class`, `text`, `dataset`, `on<event>`). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

/** An SVG element (attributes only). */
export function svg(tag, attrs = {}) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace all children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

export function setText(node, value) {
  const text = value === null || value === undefined ? '' : String(value);
  if (node.textContent !== text) node.textContent = text;
}

export function pill(status, extraClass = 'status') {
  return el('span', { class: `pill ${extraClass}-${status}`, text: status.replace('_', ' ') });
}

// ------------------------------------------------------------------ numbers and times

const numberFormat = new Intl.NumberFormat();
export const number = (value) => (value === null || value === undefined ? '–' : numberFormat.format(value));

export function toMs(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === 'number') return value;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

export function relative(ms, now = Date.now()) {
  if (ms === null) return '–';
  const seconds = Math.round((now - ms) / 1000);
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60000);
  if (minutes < 60) return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function absolute(ms) {
  return ms === null ? '' : new Date(ms).toLocaleString();
}

/** A <time> element that `refreshTimes` keeps current. */
export function timeAgo(ms) {
  const node = el('time', { text: relative(ms) });
  if (ms !== null) {
    node.dataset.ts = String(ms);
    node.setAttribute('datetime', new Date(ms).toISOString());
    node.title = absolute(ms);
  }
  return node;
}

export function refreshTimes(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll('time[data-ts]')) setText(node, relative(Number(node.dataset.ts), now));
}

// ------------------------------------------------------------------ toasts

export function toast(message, kind = 'info') {
  const node = el('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', text: message });
  $('toasts').append(node);
  setTimeout(() => node.remove(), kind === 'error' ? 7000 : 3500);
}

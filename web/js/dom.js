// dom.js — the small helpers every view shares: building elements without innerHTML (names,
// configs and log lines are user text, never markup) and formatting times, durations and
// numbers one way everywhere.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'indeterminate']);

// h('a', {href: '#/x', class: 'y', onclick: fn}, 'text', child, [more]) → an element.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    // Through the CSSOM: the Content-Security-Policy (style-src 'self') blocks a style
    // attribute set as markup, not styles set by a script of ours.
    else if (key === 'style') element.style.cssText = value;
    else if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) element[key] = value;
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

// Appends children (nested arrays flattened; null and false skipped), unlike Element.append,
// which would write "null" or "[object HTMLElement]".
export function append(element, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// Replaces an element's children.
export function clear(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

// --- formatting ----------------------------------------------------------------------

export function parseTime(text) {
  return text ? Date.parse(text) : NaN;
}

export function formatAgo(text, now = Date.now()) {
  const then = parseTime(text);
  if (Number.isNaN(then)) return '—';
  const seconds = Math.max(0, (now - then) / 1000);
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

// How long an experiment has run: until it finished, or until now while it runs.
export function runSeconds(experiment, now = Date.now()) {
  const start = parseTime(experiment.started_at);
  if (Number.isNaN(start)) return null;
  const end = experiment.finished_at ? parseTime(experiment.finished_at) : now;
  return Math.max(0, (end - start) / 1000);
}

export function formatPercent(value, digits = 1) {
  return value == null || !Number.isFinite(value) ? '—' : `${(value * 100).toFixed(digits)}%`;
}

// Four significant digits; whole numbers with separators when large (262,104 examples/s),
// an exponent when very small (lr 5e-4).
export function formatNumber(value) {
  if (value == null || !Number.isFinite(value)) return '—';
  const magnitude = Math.abs(value);
  if (magnitude >= 1e4) return Math.round(value).toLocaleString('en-US');
  if (magnitude !== 0 && magnitude < 1e-3) return value.toExponential(2);
  return String(+value.toPrecision(4));
}

// 1.6 MB, 312 kB, 940 B (powers of 1000, as file managers show them).
export function formatBytes(value) {
  if (value == null || !Number.isFinite(Number(value))) return '—';
  const n = Number(value);
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let scaled = n;
  let unit = -1;
  while (scaled >= 1000 && unit < units.length - 1) {
    scaled /= 1000;
    unit++;
  }
  return `${scaled >= 100 ? Math.round(scaled) : +scaled.toPrecision(3)} ${units[unit]}`;
}

// A stored time in the reader's time zone: "14:03:27" today, "2026-11-27 14:03" before.
export function formatTime(text, now = Date.now()) {
  const then = parseTime(text);
  if (Number.isNaN(then)) return '—';
  const date = new Date(then);
  const pad = (n) => String(n).padStart(2, '0');
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  if (new Date(now).toDateString() === date.toDateString()) return `${clock}:${pad(date.getSeconds())}`;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock}`;
}

export function formatCount(value) {
  return value == null ? '—' : Number(value).toLocaleString('en-US');
}

export const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted'];
export const ACTIVE = new Set(['queued', 'running', 'interrupted']);

export function statusBadge(status) {
  return h('span', {class: `status status-${status}`, dataset: {status}}, status);
}

// A button that acts on the second click within a few seconds (cancelling a run of hours
// must not happen by a stray tap). `action` returns a promise; the button stays disabled
// until it settles.
export function confirmButton(label, confirmLabel, action, attributes = {}) {
  let timer = null;
  const button = h('button', {type: 'button', ...attributes, onclick: async () => {
    if (button.dataset.armed !== 'yes') {
      button.dataset.armed = 'yes';
      button.textContent = confirmLabel;
      timer = setTimeout(() => {
        button.dataset.armed = '';
        button.textContent = label;
      }, 4000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    button.textContent = `${label}…`;
    try {
      await action();
    } finally {
      button.dataset.armed = '';
      button.disabled = false;
      button.textContent = label;
    }
  }}, label);
  return button;
}

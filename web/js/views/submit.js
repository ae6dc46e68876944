// views/submit.js — the submit page (#/submit): write or paste a config (templates from the
// daemon's examples/, or "Edit as new" from an experiment), submit it, and on a 400 see each
// validation error beside the field the server named — its line marked in the editor, the
// message at the line's end — and listed below with its path. The server validates; this page
// only shows where (docs/config.md has the fields).

import {api} from '../api.js';
import {h, append, clear} from '../dom.js';
import {locatePaths, findPath, lineOf} from '../jsonpath.js';

// Runs in about a second on the generated dataset: for trying the dashboard out.
const QUICK = `{
  "name": "quick-synthetic",
  "dataset": {"name": "synthetic", "train_size": 4096},
  "model": {
    "layers": [
      {"type": "linear", "out": 32, "name": "fc1"},
      {"type": "relu"},
      {"type": "linear", "out": 10, "name": "out"}
    ]
  },
  "epochs": 20
}
`;

export function mount(root) {
  document.title = 'Submit · MapSage';
  let errors = []; // [{path, message}] of the last refused submission
  let marksQueued = false;

  const templates = h('select', {name: 'template', 'aria-label': 'template', onchange: () => loadTemplate()},
    h('option', {value: ''}, 'quick synthetic run'));
  const editor = h('div', {class: 'editor'});
  const gutter = h('div', {class: 'gutter', 'aria-hidden': 'true'});
  const marks = h('div', {class: 'marks'});
  const textarea = h('textarea', {name: 'config', spellcheck: 'false', wrap: 'off', autocomplete: 'off',
    'aria-label': 'experiment config (JSON)', rows: 24});
  const submitButton = h('button', {type: 'submit'}, 'Submit');
  const status = h('p', {class: 'submit-status', role: 'status'});
  const errorList = h('ul', {class: 'field-errors'});

  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'New experiment'),
      h('label', {class: 'inline'}, 'Template ', templates)),
    h('form', {class: 'submit-form', onsubmit: (event) => {
      event.preventDefault();
      submit();
    }},
    append(editor, gutter,
      h('div', {class: 'code'}, h('div', {class: 'backdrop', 'aria-hidden': 'true'}, marks), textarea)),
    h('div', {class: 'form-actions'}, submitButton,
      h('span', {class: 'hint'}, 'Ctrl+Enter submits. The daemon checks every field (docs/config.md lists them).')),
    status, errorList));

  // --- the editor ------------------------------------------------------------------------

  // The gutter has a number per line; the editor grows with the config, up to most of the
  // screen (then it scrolls).
  function renderGutter() {
    const lines = textarea.value.split('\n').length;
    editor.style.height = `min(70vh, calc(${Math.max(lines + 2, 12)} * var(--code-line) + 18px))`;
    if (gutter.childElementCount !== lines) {
      clear(gutter);
      for (let i = 1; i <= lines; i++) gutter.append(h('div', {}, String(i)));
    }
  }

  function syncScroll() {
    const transform = `translate(${-textarea.scrollLeft}px, ${-textarea.scrollTop}px)`;
    marks.style.transform = transform;
    gutter.style.transform = `translateY(${-textarea.scrollTop}px)`;
  }

  // Where each error points in the text as it is now (the user may have edited since).
  function placeErrors() {
    const text = textarea.value;
    const spans = locatePaths(text);
    return errors.map((error) => {
      let line = null;
      let span = null;
      const found = findPath(spans, error.path);
      if (error.path === '' || !found) {
        const match = /line (\d+)/.exec(error.message); // "invalid JSON at line 2, column 15"
        if (match) line = Number(match[1]);
      } else if (found.span && error.path !== '') {
        span = found.span;
        line = lineOf(text, span.start);
      }
      return {...error, line, span};
    });
  }

  function renderMarks() {
    marksQueued = false;
    clear(marks);
    for (const div of gutter.children) {
      div.classList.remove('bad');
      div.removeAttribute('title');
    }
    const lines = textarea.value.split('\n');
    const byLine = new Map();
    for (const placed of placeErrors()) {
      if (placed.line == null) continue;
      if (!byLine.has(placed.line)) byLine.set(placed.line, []);
      byLine.get(placed.line).push(placed);
    }
    for (const [line, list] of byLine) {
      const text = list.map((e) => e.message).join('; ');
      const length = (lines[line - 1] || '').length;
      marks.append(
        h('div', {class: 'mark-line', style: `top: calc(${line - 1} * var(--code-line))`}),
        h('div', {class: 'mark-note', style: `top: calc(${line - 1} * var(--code-line)); left: ${length + 2}ch`,
          dataset: {line}}, `← ${text}`));
      const number = gutter.children[line - 1];
      if (number) {
        number.classList.add('bad');
        number.title = text;
      }
    }
  }

  function scheduleMarks() {
    if (marksQueued) return;
    marksQueued = true;
    requestAnimationFrame(renderMarks);
  }

  function select(placed) {
    textarea.focus();
    if (placed.span) textarea.setSelectionRange(placed.span.start, placed.span.end);
    else if (placed.line != null) {
      const lines = textarea.value.split('\n');
      const start = lines.slice(0, placed.line - 1).reduce((n, l) => n + l.length + 1, 0);
      textarea.setSelectionRange(start, start + (lines[placed.line - 1] || '').length);
    }
    if (placed.line != null) {
      const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 20;
      textarea.scrollTop = Math.max(0, (placed.line - 3) * lineHeight);
    }
  }

  function renderErrors() {
    clear(errorList);
    for (const placed of placeErrors()) {
      errorList.append(h('li', {dataset: {path: placed.path}},
        h('button', {type: 'button', class: 'link', onclick: () => select(placed),
          title: placed.line ? `line ${placed.line}` : 'the whole config'},
        h('code', {class: 'path'}, placed.path || '(config)'),
        placed.line ? h('span', {class: 'line'}, `line ${placed.line}`) : null),
        h('span', {class: 'message'}, placed.message)));
    }
    renderMarks();
  }

  textarea.addEventListener('input', () => {
    renderGutter();
    scheduleMarks();
  });
  textarea.addEventListener('scroll', syncScroll);
  textarea.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });

  function setText(text) {
    textarea.value = text;
    errors = [];
    renderGutter();
    renderErrors();
    clear(status);
    textarea.scrollTop = 0;
    syncScroll();
  }

  // --- templates and submission ----------------------------------------------------------

  async function loadTemplate() {
    const file = templates.value;
    if (!file) {
      setText(QUICK);
      return;
    }
    try {
      setText(await api.example(file));
    } catch (e) {
      status.textContent = `Could not load ${file}: ${e.message}`;
    }
  }

  async function submit() {
    submitButton.disabled = true;
    status.className = 'submit-status';
    status.textContent = 'Submitting…';
    try {
      const answer = await api.submit(textarea.value);
      errors = [];
      renderErrors();
      status.textContent = `Experiment #${answer.id} is ${answer.status}.`;
      location.hash = `#/experiments/${answer.id}`;
    } catch (e) {
      errors = e.errors || [];
      status.className = 'submit-status error';
      status.textContent = errors.length
        ? `The daemon refused this config: ${errors.length} error${errors.length > 1 ? 's' : ''}.`
        : `The daemon refused this config: ${e.message}`;
      renderErrors();
    } finally {
      submitButton.disabled = false;
    }
  }

  let draft = null;
  try {
    draft = sessionStorage.getItem('mapsage.draft');
    sessionStorage.removeItem('mapsage.draft');
  } catch { /* no storage: start from the template */ }
  setText(draft ? `${draft}\n` : QUICK);
  api.examples().then((files) => {
    for (const file of files) templates.append(h('option', {value: file}, file.replace(/\.json$/, '')));
  }).catch(() => { /* an older daemon without examples: the quick template remains */ });

  return () => {};
}

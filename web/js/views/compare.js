// views/compare.js — the compare page (#/compare?ids=3,4&metric=loss/total&by=epoch): pick
// several experiments, see the config values that differ between them (all of them on
// demand), their final figures side by side, and one metric overlaid, aligned by step or by
// epoch; while any of them trains, the page reads their curves again every two seconds, so
// the overlay stays live. The choice lives in the URL, so a comparison can be bookmarked and
// sent.
//
// Aligning by epoch: evaluations carry their epoch, per-step curves do not. Each run's
// evaluation steps say where its epochs ended, so step s inside epoch e (which ended at step
// E_e) sits at e - 1 + (s - E_{e-1}) / (E_e - E_{e-1}): epoch boundaries line up across runs
// with different batch sizes or dataset sizes.

import {api} from '../api.js';
import {LiveChart} from '../charts.js';
import {h, append, clear, statusBadge, formatPercent, formatNumber, formatCount, formatDuration, ACTIVE}
  from '../dom.js';

const LIVE_EVERY_MS = 2000;

// {path: value} of every leaf of a config: "optimizer.lr", "stages[0].epochs".
export function flatten(value, path = '', out = {}) {
  if (Array.isArray(value)) {
    if (value.length === 0) out[path] = '[]';
    value.forEach((item, i) => flatten(item, `${path}[${i}]`, out));
  } else if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (keys.length === 0 && path) out[path] = '{}';
    for (const key of keys) flatten(value[key], path ? `${path}.${key}` : key, out);
  } else {
    out[path] = value;
  }
  return out;
}

// The final figures the table shows, from a run's summary.
const FIGURES = [
  ['final test accuracy', (s) => formatPercent(s.final_test_accuracy, 2)],
  ['best val accuracy', (s) => formatPercent(s.best_val_accuracy, 2)],
  ['final test loss', (s) => formatNumber(s.final_test_loss)],
  ['epochs', (s) => (s.epochs == null ? '—' : String(s.epochs))],
  ['steps', (s) => (s.steps == null ? '—' : formatCount(s.steps))],
  ['time', (s) => formatDuration(s.seconds)],
  ['examples/s', (s) => (s.examples_per_s ? formatCount(Math.round(s.examples_per_s)) : '—')],
];

const EPOCH_CURVES = ['test/accuracy', 'val/accuracy', 'train/accuracy']; // any one gives the epoch ends

// step → fractional epoch, from one evaluation curve's (step, epoch) pairs.
function epochOfStep(steps, epochs) {
  const ends = steps.map((step, i) => [epochs[i], step]).sort((a, b) => a[0] - b[0]);
  return (step) => {
    let previous = 0;
    for (let i = 0; i < ends.length; i++) {
      const [epoch, end] = ends[i];
      if (step <= end) return epoch - 1 + (step - previous) / Math.max(1, end - previous);
      previous = end;
    }
    // Past the last evaluation (a running epoch): at the pace of the last one.
    const last = ends[ends.length - 1];
    const length = ends.length > 1 ? last[1] - ends[ends.length - 2][1] : last[1];
    return last[0] + (step - last[1]) / Math.max(1, length);
  };
}

export function mount(root, {query}) {
  document.title = 'Compare · MapSage';
  const state = {
    ids: (query.get('ids') || '').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0),
    metric: query.get('metric') || 'loss/total',
    by: query.get('by') === 'epoch' ? 'epoch' : 'step',
    rows: new Map(), // id → list row
    details: new Map(), // id → the run with its config (refreshed while it trains)
  };
  let liveTimer = null;
  let chart = null;
  let generation = 0; // answers of an older selection are dropped
  let stopped = false;

  const metricSelect = h('select', {name: 'metric', 'aria-label': 'metric', onchange: () => {
    state.metric = metricSelect.value;
    draw();
  }});
  const byRadios = ['step', 'epoch'].map((by) => h('label', {class: 'inline'},
    h('input', {type: 'radio', name: 'by', value: by, checked: state.by === by, onchange: () => {
      state.by = by;
      draw();
    }}), ` by ${by}`));
  const filter = h('input', {type: 'search', placeholder: 'filter by name', 'aria-label': 'filter experiments',
    oninput: () => renderPicker()});
  const picker = h('ul', {class: 'picker'});
  const note = h('p', {class: 'muted note'});
  const chartArea = h('div', {class: 'compare-chart'});
  const allValues = h('input', {type: 'checkbox', name: 'all-values', onchange: () => renderTables()});
  const diffArea = h('div', {class: 'table-wrap compare-diff'});
  const figuresArea = h('div', {class: 'table-wrap compare-figures'});

  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Compare'),
      h('div', {class: 'filters'}, h('label', {class: 'inline'}, 'Metric ', metricSelect), byRadios)),
    h('div', {class: 'compare'},
      h('aside', {class: 'compare-pick'}, filter, picker),
      h('section', {}, chartArea, note,
        h('h2', {}, 'Final figures'), figuresArea,
        h('h2', {}, 'Config ', h('label', {class: 'inline small-label'}, allValues, ' show every value')), diffArea)));

  // The runs' config values: those that differ (every one with "show every value"), one row
  // per path, one column per run.
  function renderTables() {
    const runs = state.ids.map((id) => state.details.get(id)).filter(Boolean);
    if (runs.length === 0) {
      clear(diffArea);
      clear(figuresArea);
      return;
    }
    const head = h('tr', {}, h('th', {}, ''), runs.map((r) => h('th', {dataset: {id: r.id}},
      h('a', {href: `#/experiments/${r.id}`}, `#${r.id} ${r.name || ''}`))));
    const flat = runs.map((r) => flatten(r.config || {}));
    const paths = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
    const shown = (v) => (v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
    const differs = (path) => new Set(flat.map((f) => shown(f[path]))).size > 1;
    const rows = paths.filter((path) => allValues.checked || differs(path));
    clear(diffArea, h('table', {class: 'diff'}, h('thead', {}, head.cloneNode(true)),
      h('tbody', {}, rows.length ? rows.map((path) => h('tr', {dataset: {path}, class: differs(path) ? 'differs' : ''},
        h('th', {scope: 'row'}, h('code', {}, path)), flat.map((f) => h('td', {}, shown(f[path])))))
        : h('tr', {}, h('td', {colspan: String(runs.length + 1), class: 'muted'},
          runs.length > 1 ? 'Their configs are the same (names aside).' : 'Pick another run to compare.')))));
    clear(figuresArea, h('table', {class: 'figures-table'}, h('thead', {}, head),
      h('tbody', {},
        h('tr', {dataset: {figure: 'status'}}, h('th', {scope: 'row'}, 'status'),
          runs.map((r) => h('td', {}, statusBadge(r.status)))),
        FIGURES.map(([label, format]) => h('tr', {dataset: {figure: label}}, h('th', {scope: 'row'}, label),
          runs.map((r) => h('td', {class: 'num'}, r.summary ? format(r.summary) : '—')))))));
  }

  function updateUrl() {
    const search = new URLSearchParams();
    if (state.ids.length) search.set('ids', state.ids.join(','));
    search.set('metric', state.metric);
    search.set('by', state.by);
    history.replaceState(null, '', `#/compare?${search.toString().replace(/%2C/g, ',').replace(/%2F/g, '/')}`);
  }

  function renderPicker() {
    const needle = filter.value.trim().toLowerCase();
    clear(picker);
    const rows = [...state.rows.values()].sort((a, b) => b.id - a.id);
    for (const row of rows) {
      if (needle && !(row.name || '').toLowerCase().includes(needle) && !state.ids.includes(row.id)) continue;
      const box = h('input', {type: 'checkbox', checked: state.ids.includes(row.id), value: String(row.id),
        onchange: () => {
          state.ids = box.checked ? [...state.ids, row.id] : state.ids.filter((id) => id !== row.id);
          draw(true);
        }});
      picker.append(h('li', {}, h('label', {}, box, h('span', {class: 'muted'}, ` #${row.id} `), row.name || '(unnamed)',
        ' ', statusBadge(row.status))));
    }
    if (!rows.length) picker.append(h('li', {class: 'muted'}, 'No experiments yet.'));
  }

  // The names of one run's curves, as its details list them (`series`).
  async function namesOf(id) {
    const details = await api.experiment(id);
    state.details.set(id, details);
    if (!state.rows.has(id)) state.rows.set(id, details);
    return details.series || [];
  }

  // The chosen runs' curves as the chart's tables, and what could not be shown.
  async function curveTables() {
    const answers = await Promise.all(state.ids.map((id) =>
      api.metrics(id, {names: [state.metric, ...EPOCH_CURVES]})));
    const tables = [];
    const skipped = [];
    answers.forEach((curves, i) => {
      const id = state.ids[i];
      const curve = curves[state.metric];
      const label = `#${id} ${(state.rows.get(id) || {}).name || ''}`.trim();
      if (!curve || curve.step.length === 0) {
        skipped.push(`#${id} has no ${state.metric}`);
        return;
      }
      let xs = curve.step;
      if (state.by === 'epoch') {
        if (curve.epoch) xs = curve.epoch;
        else {
          const reference = EPOCH_CURVES.map((n) => curves[n]).find((c) => c && c.step.length);
          if (!reference) {
            skipped.push(`#${id} has no finished epoch yet`);
            return;
          }
          const toEpoch = epochOfStep(reference.step, reference.epoch);
          xs = curve.step.map(toEpoch);
        }
      }
      tables.push([label, xs, curve.value]);
    });
    return {tables, skipped};
  }

  // While a chosen run trains: its row, figures and curves again.
  async function refreshLive() {
    liveTimer = null;
    if (stopped) return;
    const mine = generation;
    const active = state.ids.filter((id) => ACTIVE.has((state.details.get(id) || {}).status));
    if (active.length === 0) return;
    try {
      for (const id of active) state.details.set(id, await api.experiment(id));
      const {tables} = await curveTables();
      if (mine !== generation || stopped) return;
      if (chart) chart.load(tables);
      renderTables();
    } catch { /* tried again at the next tick */ }
    scheduleLive();
  }

  function scheduleLive() {
    clearTimeout(liveTimer);
    liveTimer = null;
    if (!stopped && state.ids.some((id) => ACTIVE.has((state.details.get(id) || {}).status))) {
      liveTimer = setTimeout(refreshLive, LIVE_EVERY_MS);
    }
  }

  async function draw(selectionChanged = false) {
    updateUrl();
    const mine = ++generation;
    if (chart) {
      chart.destroy();
      chart = null;
    }
    clear(chartArea);
    renderTables();
    if (state.ids.length === 0) {
      note.textContent = 'Pick experiments on the left (or tick them on the experiments page).';
      return;
    }
    note.textContent = 'Loading…';
    try {
      if (selectionChanged || metricSelect.options.length === 0) {
        const names = new Set();
        for (const list of await Promise.all(state.ids.map(namesOf))) list.forEach((n) => names.add(n));
        if (mine !== generation || stopped) return;
        names.add(state.metric);
        // Grouped as the experiment page groups them: per step, then per epoch.
        const perEpoch = (n) => /^(train|val|test|teacher)\//.test(n);
        const group = (label, list) => (list.length
          ? h('optgroup', {label}, list.sort().map((n) => h('option', {value: n}, n))) : null);
        clear(metricSelect, group('per step', [...names].filter((n) => !perEpoch(n))),
          group('per epoch', [...names].filter(perEpoch)));
        metricSelect.value = state.metric;
      }
      for (const id of state.ids) {
        if (!state.details.has(id)) state.details.set(id, await api.experiment(id));
        if (!state.rows.has(id)) state.rows.set(id, state.details.get(id));
      }
      const {tables, skipped} = await curveTables();
      if (mine !== generation || stopped) return;
      renderTables();
      chart = new LiveChart(chartArea, {title: `${state.metric} by ${state.by}`, kind: 'compare', xLabel: state.by,
        height: 360});
      chart.load(tables);
      note.textContent = skipped.length ? `Not shown: ${skipped.join('; ')}.` : 'Drag to zoom, double-click to reset.';
      scheduleLive();
    } catch (e) {
      note.textContent = `Could not load the curves: ${e.message}`;
    }
  }

  api.experiments({limit: 200}).then((page) => {
    if (stopped) return;
    for (const row of page.experiments) state.rows.set(row.id, row);
    renderPicker();
    draw(true);
  }).catch((e) => {
    note.textContent = `Could not list the experiments: ${e.message}`;
  });

  return () => {
    stopped = true;
    clearTimeout(liveTimer);
    if (chart) chart.destroy();
  };
}

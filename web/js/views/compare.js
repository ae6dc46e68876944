// views/compare.js — the compare page (#/compare?ids=3,4&metric=loss/total&by=epoch): pick
// several experiments, overlay one metric, aligned by step or by epoch. The choice lives in
// the URL, so a comparison can be bookmarked and sent.
//
// Aligning by epoch: evaluations carry their epoch, per-step curves do not. Each run's
// evaluation steps say where its epochs ended, so step s inside epoch e (which ended at step
// E_e) sits at e - 1 + (s - E_{e-1}) / (E_e - E_{e-1}): epoch boundaries line up across runs
// with different batch sizes or dataset sizes.

import {api} from '../api.js';
import {LiveChart} from '../charts.js';
import {h, append, clear, statusBadge} from '../dom.js';

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
  };
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

  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Compare'),
      h('div', {class: 'filters'}, h('label', {class: 'inline'}, 'Metric ', metricSelect), byRadios)),
    h('div', {class: 'compare'},
      h('aside', {class: 'compare-pick'}, filter, picker),
      h('section', {}, chartArea, note)));

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
    if (!state.rows.has(id)) state.rows.set(id, details);
    return details.series || [];
  }

  async function draw(selectionChanged = false) {
    updateUrl();
    const mine = ++generation;
    if (chart) {
      chart.destroy();
      chart = null;
    }
    clear(chartArea);
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
      for (const id of state.ids) if (!state.rows.has(id)) state.rows.set(id, await api.experiment(id));
      const answers = await Promise.all(state.ids.map((id) =>
        api.metrics(id, {names: [state.metric, ...EPOCH_CURVES]})));
      if (mine !== generation || stopped) return;
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
      chart = new LiveChart(chartArea, {title: `${state.metric} by ${state.by}`, kind: 'compare', xLabel: state.by,
        height: 360});
      chart.load(tables);
      note.textContent = skipped.length ? `Not shown: ${skipped.join('; ')}.` : 'Drag to zoom, double-click to reset.';
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
    if (chart) chart.destroy();
  };
}

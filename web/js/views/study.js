// views/study.js — one study (#/studies/3): what it asked and where it stands, the arm table
// (each arm and cell: n, test and best validation accuracy with their 95% intervals, the
// difference from its matched baseline with its interval and Holm-adjusted p), a forest plot
// of those differences, the grid's heatmap or axis effects, each arm's mean curves with their
// bands, and every run.
//
// Live while the study runs. The study's stream is live only, so it is opened together with
// the first read (nothing between the two is lost) and closed at once if the study has
// already ended. A `run` event replaces that run's row in place; a `study` event updates the
// header, and when it says the statistics changed (a run ended), the study and its curves
// are read again — at most once a second, however many runs end at once: a 200-run study
// that is cancelled sends 200 such events in a burst, and that is one or two reads.

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {BandChart, PALETTE, themeColors} from '../charts.js';
import {forestPlot, formatPoints, formatValue, heatmap, axisTable} from '../plots.js';
import {runsProgress, ENDED} from './studies.js';
import {organiseControls} from '../organise.js';
import {h, append, clear, confirmButton, formatAgo, formatCount, formatDuration, formatNumber, formatPercent,
  formatTime, runSeconds, statusBadge} from '../dom.js';

const REFETCH_GAP_MS = 1000;
const SIGNIFICANCE = 0.05;

// The curves the page draws, by the daemon's names (docs/api.md, study curves).
const CURVES = [
  {name: 'val/accuracy', title: 'Validation accuracy per epoch', yBounds: [0, 1], format: (v) => formatPercent(v)},
  {name: 'loss/task', title: 'Task loss per step', format: formatNumber},
  {name: 'loss/distill', title: 'Distillation loss per step', format: formatNumber},
];

// A cell as a key that does not depend on the order of its paths.
function cellKey(cell) {
  const entries = Object.entries(cell || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(entries);
}

// "optimizer.lr = 0.1 · batch_size = 32"; '' for no cell.
function describeCell(cell) {
  return Object.entries(cell || {}).map(([path, value]) => `${path} = ${formatValue(value)}`).join(' · ');
}

// The arm a baseline serves: "kd/baseline" → "kd".
const servedArm = (name) => name.replace(/\/baseline$/, '');

// A colour halfway to grey: the baseline beside its arm.
function muted(color) {
  const grey = [0x9a, 0xa3, 0xaf];
  const channels = [1, 3, 5].map((i, k) => Math.round((parseInt(color.slice(i, i + 2), 16) + grey[k]) / 2));
  return `#${channels.map((c) => c.toString(16).padStart(2, '0')).join('')}`;
}

// A p-value as a reader wants it: two significant digits, "< 0.001" below that.
function formatP(p) {
  if (p == null || !Number.isFinite(p)) return '—';
  return p < 0.001 ? '< 0.001' : String(+p.toPrecision(2));
}

// Where a run stands: a later state (queued < running < ended), then a later epoch.
function fresher(a, b) {
  const rank = (run) => (ENDED.includes(run.status) ? 2 : run.status === 'running' ? 1 : 0);
  if (rank(a) !== rank(b)) return rank(a) > rank(b);
  return (a.epoch || 0) > (b.epoch || 0);
}

// The study's header, by how far its runs have got: events and reads can cross.
function headerProgress(header) {
  const counts = header.counts || {};
  const done = ENDED.reduce((sum, status) => sum + (counts[status] || 0), 0);
  return [ENDED.includes(header.status) ? 1 : 0, done, counts.running || 0];
}

// Ended, and every run with it (a cancelled study is "cancelled" at once, its runs a moment
// later).
function finished(header) {
  const counts = header.counts || {};
  return ENDED.includes(header.status) && !counts.queued && !counts.running && !counts.interrupted;
}

function newer(a, b) {
  const [pa, pb] = [headerProgress(a), headerProgress(b)];
  for (let i = 0; i < pa.length; i++) if (pa[i] !== pb[i]) return pa[i] > pb[i];
  return false;
}

export function mount(root, {params}) {
  const id = Number(params[0]);
  document.title = `Study #${id} · MapSage`;
  let study = null; // the details last read
  let header = null; // the header: from the details or the stream, whichever is further
  let stream = null;
  let stopped = false;
  let stopForest = null;
  const rows = new Map(); // experiment id → {run, tr, cells}
  const early = new Map(); // experiment id → a run event that came before its row
  const fetches = {count: 0, inFlight: false, again: false, timer: null, last: 0};

  // --- the layout, made once ------------------------------------------------------------

  const title = h('h1');
  let shownTitle = null;
  const description = h('p', {class: 'description'});
  const meta = h('p', {class: 'meta'});
  const progress = h('div', {class: 'study-progress'});
  const errorBox = h('p', {class: 'error', hidden: true});
  const cancelButton = confirmButton('Cancel study', 'Really cancel every run?', () => api.cancelStudy(id)
    .then(() => refetchSoon()).catch((e) => showError(`cancel: ${e.message}`)), {class: 'danger',
    dataset: {action: 'cancel'}, hidden: true});
  const organise = organiseControls({patch: (changes) => api.patchStudy(id, changes), onChanged: (changed) => {
    // Not through takeHeader: these fields say nothing of how far the runs have got.
    header = {...header, name: changed.name, note: changed.note, tags: changed.tags, archived_at: changed.archived_at};
    shownTitle = null;
    renderHeader();
  }, onError: (message) => showError(message)});
  const armsBody = h('tbody');
  const armsHead = h('thead');
  const armsNote = h('p', {class: 'note muted'});
  const armsSection = section('arms', 'Arms', armsNote,
    h('div', {class: 'table-wrap'}, h('table', {class: 'arms'}, armsHead, armsBody)));
  const forestHost = h('div', {class: 'forest-host'});
  const forestSection = section('forest', 'Difference from the matched baseline', h('p', {class: 'note muted'},
    'Test accuracy, distilling arm minus its baseline, with the 95% interval of the paired difference. A filled ' +
    'diamond is significant after Holm\'s adjustment (p < 0.05); a hollow circle is not.'), forestHost);
  const gradientsBody = h('div', {class: 'table-wrap'});
  const findingsList = h('ul', {class: 'findings'});
  const gradientsSection = section('gradients', 'Which term moves the student', h('p', {class: 'note muted'},
    'Each distilling arm\'s mean share of the gradient on the student per loss term (its weighted gradient over ' +
    'all terms\'), and the mean cosine between the task\'s gradient and each other term\'s: below zero, they pull ' +
    'against each other. A term dominates by its share of the gradient, not of the loss.'), findingsList,
  gradientsBody);
  const gridBody = h('div', {class: 'grid-figures'});
  const gridSection = section('grid', 'Grid', h('p', {class: 'note muted'}, 'Mean best validation accuracy; the ' +
    'best cell is chosen on validation, never on test.'), gridBody);
  const chartsGrid = h('div', {class: 'charts'});
  const curvesNote = h('p', {class: 'note muted'}, 'Each arm\'s mean over its seeds, with the 95% band (its ' +
    'matched baseline, if it has one, dashed in a muted colour beside it). Runs stopped early are left out. ' +
    'Drag across a chart to zoom, double-click to zoom out.');
  const curvesSection = section('curves', 'Mean curves', curvesNote, chartsGrid);
  const runsBody = h('tbody');
  const runsCount = h('span', {class: 'muted count'});
  const runsHead = h('thead');
  const runsSection = h('section', {class: 'study-section', dataset: {section: 'runs'}},
    h('h2', {}, 'Runs ', runsCount),
    // A long study's runs scroll under their header, so what follows stays near.
    h('div', {class: 'table-wrap runs-wrap'}, h('table', {class: 'study-runs'}, runsHead, runsBody)));
  const comparisonsView = h('div', {class: 'table-wrap'});
  const specView = h('pre', {class: 'config'});
  const charts = CURVES.map((curve) => {
    const slot = h('div', {class: 'slot', hidden: true, dataset: {chart: curve.name}});
    chartsGrid.append(slot);
    return {curve, slot, chart: new BandChart(slot, {title: curve.title, kind: curve.name, yBounds: curve.yBounds,
      format: curve.format, empty: 'loading…'})};
  });
  append(root,
    h('div', {class: 'run-header study-header'}, title, h('div', {class: 'actions'}, cancelButton, organise.buttons),
      description, organise.shown, meta, progress, organise.panel),
    errorBox, armsSection, forestSection, gradientsSection, gridSection, curvesSection, runsSection,
    h('details', {class: 'panel', dataset: {panel: 'comparisons'}}, h('summary', {}, 'Every comparison'),
      comparisonsView),
    h('details', {class: 'panel'}, h('summary', {}, 'Spec'), specView));
  root.classList.add('study-view');
  root.dataset.fetches = '0';
  root.fetchTimes = [];

  function section(key, heading, ...children) {
    return h('section', {class: 'study-section', dataset: {section: key}, hidden: true}, h('h2', {}, heading),
      children);
  }

  function showError(message) {
    errorBox.textContent = message || '';
    errorBox.hidden = !message;
  }

  // --- colours: each arm (and cell) its own, its baseline a muted version ---------------

  let colors = new Map(); // `${arm} ${cellKey}` → colour

  let shared = new Set(); // baselines (`${arm} ${cellKey}`) whose runs serve several arms: grey, no one's colour

  function assignColors(arms) {
    colors = new Map();
    shared = new Set();
    let next = 0;
    const byRuns = new Map();
    for (const arm of arms) {
      const key = `${arm.name} ${cellKey(arm.cell)}`;
      if (arm.role === 'arm') colors.set(key, PALETTE[next++ % PALETTE.length]);
      if (arm.role !== 'baseline') continue;
      const runs = JSON.stringify(arm.runs);
      if (byRuns.has(runs)) shared.add(key).add(byRuns.get(runs));
      else byRuns.set(runs, key);
    }
  }

  function colorOf(name, role, cell) {
    if (role === 'teacher') return themeColors().fg;
    if (role === 'baseline') {
      const own = colors.get(`${servedArm(name)} ${cellKey(cell)}`);
      return own && !shared.has(`${name} ${cellKey(cell)}`) ? muted(own) : themeColors().marker;
    }
    return colors.get(`${name} ${cellKey(cell)}`) || themeColors().muted;
  }

  // --- header ---------------------------------------------------------------------------

  function renderHeader() {
    if (!header) return;
    const s = header;
    if (shownTitle !== `${s.name} ${s.status}`) { // a new badge would restart its animation
      clear(title, h('span', {class: 'muted'}, `#${id} `), s.name || '(unnamed)', ' ', statusBadge(s.status));
      shownTitle = `${s.name} ${s.status}`;
    }
    description.textContent = s.description || '';
    description.hidden = !s.description;
    const parts = [`${formatCount(s.runs)} runs`, `created ${formatAgo(s.created_at)}`];
    const seconds = runSeconds(s);
    if (seconds != null) parts.push(`${s.finished_at ? 'ran' : 'running for'} ${formatDuration(seconds)}`);
    if (s.finished_at) parts.push(`finished ${formatTime(s.finished_at)}`);
    meta.textContent = parts.join(' · ');
    clear(progress, runsProgress(s));
    cancelButton.hidden = ENDED.includes(s.status);
    organise.update(s);
    root.dataset.status = s.status;
    showError(s.error || '');
  }

  function takeHeader(fresh) {
    if (header && newer(header, fresh)) return;
    header = {...header, ...fresh};
    renderHeader();
  }

  // --- the arm table --------------------------------------------------------------------

  function interval(summary, format) {
    if (!summary || summary.mean == null) return h('span', {class: 'muted'}, '—');
    const [low, high] = summary.ci || [];
    const half = low != null && high != null ? (high - low) / 2 : null;
    return h('span', {class: 'estimate', title: half == null ? `n = ${summary.n}`
      : `95% interval ${format(low)} to ${format(high)} (n = ${summary.n})`},
    format(summary.mean), half == null ? null : h('span', {class: 'ci'}, ` ± ${(half * 100).toFixed(1)}`));
  }

  function renderArms() {
    const arms = study.arms || [];
    const withCells = arms.some((arm) => Object.keys(arm.cell || {}).length);
    const comparison = new Map((study.comparisons || []).filter((c) => c.outcome === 'test_accuracy')
      .map((c) => [`${c.arm} ${cellKey(c.cell)}`, c]));
    const compared = comparison.size > 0;
    armsNote.textContent = `Mean over the seeds with the half-width of its 95% interval (percentage points).${compared
      ? ' Δ is the paired difference in test accuracy from the arm\'s matched baseline (same student, data, seed ' +
        'and steps, without the teacher) with its 95% interval; p is Holm-adjusted over the study\'s comparisons.'
      : ''}`;
    clear(armsHead, h('tr', {}, h('th', {scope: 'col'}, 'arm'), withCells ? h('th', {scope: 'col'}, 'cell') : null,
      h('th', {scope: 'col', class: 'num'}, 'n'), h('th', {scope: 'col', class: 'num'}, 'test accuracy'),
      h('th', {scope: 'col', class: 'num'}, 'best val accuracy'),
      compared ? h('th', {scope: 'col', class: 'num'}, 'Δ test vs baseline') : null,
      compared ? h('th', {scope: 'col'}, 'p (Holm)') : null));
    clear(armsBody, arms.map((arm) => {
      const key = `${arm.name} ${cellKey(arm.cell)}`;
      const c = arm.role === 'arm' ? comparison.get(key) : null;
      const outcomes = arm.outcomes || {};
      const counted = outcomes.test_accuracy ? outcomes.test_accuracy.n : 0;
      const significant = !!c && c.matched && c.p_holm != null && c.p_holm < SIGNIFICANCE;
      let p = null;
      if (c && !c.matched) {
        p = h('span', {class: 'flag unmatched', title: 'The arm and its baseline trained different numbers of ' +
          'steps: a difference of budget is not an effect of distillation, so there is no test.'}, 'unmatched');
      } else if (c) {
        p = [h('span', {class: 'p-value'}, formatP(c.p_holm)),
          significant ? h('span', {class: 'flag significant', title: `Holm-adjusted p < ${SIGNIFICANCE}`},
            'significant') : null];
      }
      return h('tr', {class: `role-${arm.role}${significant ? ' significant' : ''}`,
        dataset: {arm: arm.name, role: arm.role, cell: cellKey(arm.cell)}},
      h('th', {scope: 'row', class: 'arm-name'}, h('span', {class: 'swatch', style: `--swatch:${colorOf(arm.name,
        arm.role, arm.cell)}`, 'aria-hidden': 'true'}), arm.name,
      arm.role === 'teacher' && arm.name !== 'teacher' ? h('span', {class: 'muted'}, ' (teacher)') : null),
      withCells ? h('td', {class: 'cell', dataset: {label: 'cell'}}, describeCell(arm.cell) || '—') : null,
      h('td', {class: 'num n', dataset: {label: 'n'}}, String(counted),
        counted < arm.runs.length ? h('span', {class: 'muted'}, ` of ${arm.runs.length}`) : null,
        arm.stopped && arm.stopped.length ? h('span', {class: 'muted'}, ` (${arm.stopped.length} stopped early)`)
          : null),
      h('td', {class: 'num', dataset: {label: 'test', outcome: 'test_accuracy'}},
        interval(outcomes.test_accuracy, formatPercent)),
      h('td', {class: 'num', dataset: {label: 'best val', outcome: 'best_val_accuracy'}},
        interval(outcomes.best_val_accuracy, formatPercent)),
      compared ? h('td', {class: 'num delta', dataset: {label: 'Δ test'}}, c ? h('span', {title: `over ${c.n} pairs`},
        formatPoints(c.mean_diff), c.ci && c.ci[0] != null
          ? h('span', {class: 'ci'}, ` [${formatPoints(c.ci[0])}, ${formatPoints(c.ci[1])}]`) : null) : '') : null,
      compared ? h('td', {class: 'p', dataset: {label: 'p'}}, p) : null);
    }));
    armsSection.hidden = arms.length === 0;
  }

  function renderForest() {
    if (stopForest) stopForest();
    stopForest = null;
    const rowsOfForest = (study.comparisons || []).filter((c) => c.outcome === 'test_accuracy').map((c) => ({
      key: `${c.arm} ${cellKey(c.cell)}`, label: c.arm, detail: describeCell(c.cell), mean: c.mean_diff,
      low: c.ci ? c.ci[0] : null, high: c.ci ? c.ci[1] : null, color: colorOf(c.arm, 'arm', c.cell),
      matched: c.matched, significant: c.matched && c.p_holm != null && c.p_holm < SIGNIFICANCE}));
    forestSection.hidden = rowsOfForest.length === 0;
    if (rowsOfForest.length) {
      stopForest = forestPlot(forestHost, rowsOfForest,
        {axisLabel: 'Δ test accuracy vs matched baseline (percentage points)'});
    }
  }

  function renderGradients() {
    const arms = (study.arms || []).filter((a) => a.gradients);
    const terms = ['task', 'distill', 'feature', 'adversarial'].filter((term) =>
      arms.some((a) => a.gradients.share[term] != null));
    const findings = study.findings || [];
    clear(findingsList, findings.map((f) => h('li', {class: 'warning'},
      h('b', {}, f.arm), describeCell(f.cell) ? ` (${describeCell(f.cell)})` : '', `: ${f.message}`)));
    findingsList.hidden = findings.length === 0;
    clear(gradientsBody, arms.length ? h('table', {class: 'gradients'},
      h('thead', {}, h('tr', {}, [h('th', {scope: 'col'}, 'arm'),
        ...terms.map((term) => h('th', {scope: 'col', class: 'num'}, `${term} share`)),
        ...terms.filter((term) => term !== 'task').map((term) => h('th', {scope: 'col', class: 'num'},
          `cos(task, ${term})`))])),
      h('tbody', {}, arms.map((a) => h('tr', {dataset: {arm: a.name}},
        h('th', {scope: 'row'}, a.name, describeCell(a.cell) ? h('span', {class: 'muted'}, ` ${describeCell(a.cell)}`)
          : ''),
        ...terms.map((term) => h('td', {class: 'num'}, a.gradients.share[term] != null
          ? formatPercent(a.gradients.share[term]) : '—')),
        ...terms.filter((term) => term !== 'task').map((term) => {
          const cosine = a.gradients.cosine[term];
          return h('td', {class: cosine != null && cosine < 0 ? 'num against' : 'num'},
            cosine != null ? cosine.toFixed(2) : '—');
        }))))) : '');
    gradientsSection.hidden = arms.length === 0;
  }

  function renderGrid() {
    const figures = [];
    for (const entry of study.grid || []) {
      const axes = entry.axes || [];
      if (axes.length === 2) {
        figures.push(heatmap(entry, (cell) => {
          const arm = (study.arms || []).find((a) => a.name === entry.arm && a.role === 'arm' &&
            cellKey(a.cell) === cellKey(cell));
          const summary = arm && arm.outcomes.best_val_accuracy;
          return summary ? {mean: summary.mean, n: summary.n} : null;
        }));
      } else {
        for (const axis of axes) figures.push(axisTable(entry, axis));
      }
      if (entry.best) {
        figures.push(h('p', {class: 'best-cell'}, `${entry.arm}: best on validation `,
          h('b', {}, describeCell(entry.best.cell)), ` (${formatPercent(entry.best.best_val_accuracy)} validation, `,
          `${formatPercent(entry.best.test_accuracy)} test, n = ${entry.best.n})`));
      }
    }
    clear(gridBody, figures);
    gridSection.hidden = figures.length === 0;
  }

  function renderComparisons() {
    const list = study.comparisons || [];
    clear(comparisonsView, list.length ? h('table', {class: 'comparisons'},
      h('thead', {}, h('tr', {}, ['arm', 'cell', 'outcome', 'n', 'difference', '95% interval', 't', 'p', 'p (Holm)']
        .map((label) => h('th', {scope: 'col'}, label)))),
      h('tbody', {}, list.map((c) => {
        const proportion = c.outcome !== 'test_loss';
        const show = (v) => (proportion ? formatPoints(v) : formatNumber(v));
        return h('tr', {dataset: {arm: c.arm, outcome: c.outcome}},
          h('th', {scope: 'row'}, c.arm), h('td', {}, describeCell(c.cell) || '—'), h('td', {}, c.outcome),
          h('td', {class: 'num'}, String(c.n)), h('td', {class: 'num'}, show(c.mean_diff)),
          h('td', {class: 'num'}, c.ci && c.ci[0] != null ? `[${show(c.ci[0])}, ${show(c.ci[1])}]` : '—'),
          h('td', {class: 'num'}, formatNumber(c.t)),
          h('td', {class: 'num'}, c.matched ? formatP(c.p) : 'unmatched'),
          h('td', {class: 'num'}, c.matched ? formatP(c.p_holm) : '—'));
      }))) : h('p', {class: 'empty-note'}, 'No arm learns from a teacher: nothing to compare.'));
  }

  // --- the runs -------------------------------------------------------------------------

  // runs lists a run once per role it plays (a baseline shared by two arms twice): one row
  // per experiment, naming every arm it serves.
  function mergeRuns(list) {
    const merged = new Map();
    for (const run of list) {
      const known = merged.get(run.id);
      if (known) {
        if (!known.arms.includes(run.arm)) known.arms.push(run.arm);
        continue;
      }
      merged.set(run.id, {...run, arms: [run.arm]});
    }
    return [...merged.values()];
  }

  function renderRuns() {
    const list = mergeRuns(study.runs || []);
    const withCells = list.some((run) => Object.keys(run.cell || {}).length);
    if (rows.size === 0) {
      clear(runsHead, h('tr', {}, ['id', 'role', 'arm', 'seed', withCells ? 'cell' : null, 'status', 'epoch',
        'stopped early'].filter(Boolean).map((label) => h('th', {scope: 'col', class: label === 'seed' ||
          label === 'epoch' ? 'num' : null}, label))));
      const fragment = document.createDocumentFragment();
      for (const run of list) {
        const row = makeRunRow(run, withCells);
        rows.set(run.id, row);
        fragment.append(row.tr);
      }
      runsBody.append(fragment);
      for (const [runId, event] of early) takeRunEvent(runId, event);
      early.clear();
    } else {
      for (const run of list) {
        const row = rows.get(run.id);
        if (!row) continue;
        // The details say whether it was stopped early; the stream may know a later state.
        row.run.stopped_epoch = run.stopped_epoch;
        if (!fresher(row.run, run)) Object.assign(row.run, run, {arms: row.run.arms});
        renderRunRow(row);
      }
    }
    runsCount.textContent = `(${formatCount(list.length)})`;
  }

  function makeRunRow(run, withCells) {
    const link = h('a', {href: `#/experiments/${run.id}`, title: run.name}, `#${run.id}`);
    const cells = {
      id: h('td', {class: 'id'}, link),
      role: h('td', {class: 'role', dataset: {label: 'role'}}, run.role),
      arm: h('td', {class: 'arm', dataset: {label: 'arm'}}, run.arms.join(', ')),
      seed: h('td', {class: 'num seed', dataset: {label: 'seed'}}, String(run.seed)),
      cell: withCells ? h('td', {class: 'cell', dataset: {label: 'cell'}}, describeCell(run.cell) || '—') : null,
      status: h('td', {class: 'status-cell'}),
      epoch: h('td', {class: 'num epoch', dataset: {label: 'epoch'}}),
      stopped: h('td', {class: 'stopped'}),
    };
    const row = {run, cells, tr: h('tr', {dataset: {id: String(run.id), role: run.role}},
      Object.values(cells).filter(Boolean)), shownStatus: null};
    renderRunRow(row);
    return row;
  }

  function renderRunRow(row) {
    const {run, cells, tr} = row;
    if (row.shownStatus !== `${run.status} ${run.error || ''}`) { // a new badge would restart its animation
      clear(cells.status, statusBadge(run.status),
        run.error && run.stopped_epoch == null ? h('div', {class: 'row-error', title: run.error}, run.error) : null);
      row.shownStatus = `${run.status} ${run.error || ''}`;
    }
    cells.epoch.textContent = run.epoch ? `${run.epoch}/${run.epochs ?? '?'}` : '—';
    cells.stopped.textContent = run.stopped_epoch != null ? `after epoch ${run.stopped_epoch}` : '';
    cells.stopped.title = run.stopped_epoch != null && run.error ? run.error : '';
    tr.dataset.status = run.status;
    tr.classList.toggle('stopped-early', run.stopped_epoch != null);
  }

  // A `run` event: the experiment as the experiment list shows it.
  function takeRunEvent(runId, experiment) {
    const row = rows.get(runId);
    if (!row) {
      early.set(runId, experiment);
      return;
    }
    const p = experiment.progress || {};
    const incoming = {status: experiment.status, error: experiment.error, epoch: p.epoch ?? row.run.epoch,
      epochs: p.epochs ?? row.run.epochs};
    if (fresher(row.run, incoming)) return;
    Object.assign(row.run, incoming);
    renderRunRow(row);
  }

  // --- the curves -----------------------------------------------------------------------

  function renderCurves(curves) {
    for (const {curve, slot, chart} of charts) {
      const answer = curves[curve.name];
      const list = answer ? answer.series.filter((s) => s.x.length) : [];
      slot.hidden = list.length === 0;
      chart.options.xLabel = answer ? answer.x : 'step';
      chart.setSeries(seriesOf(list));
    }
    curvesSection.hidden = charts.every(({slot}) => slot.hidden);
    root.dataset.curves = 'drawn';
  }

  // The daemon's series as the chart draws them: each arm, its baseline beside it (once when
  // several arms share the same baseline runs), the teacher as a thin dashed line.
  function seriesOf(list) {
    const out = [];
    const baselines = new Map(); // what the baseline's points are → its series
    let rank = 0;
    const label = (s) => `${s.arm}${describeCell(s.cell) ? ` · ${describeCell(s.cell)}` : ''}`;
    for (const s of list) {
      if (s.role === 'teacher') {
        out.push({...s, label: 'teacher', color: themeColors().fg, dashed: true, band: false, width: 1.5, rank: -1});
      } else if (s.role === 'arm') {
        out.push({...s, label: label(s), color: colorOf(s.arm, 'arm', s.cell), rank: (rank += 2)});
        const mine = list.filter((b) => b.role === 'baseline' && servedArm(b.arm) === s.arm &&
          cellKey(b.cell) === cellKey(s.cell));
        for (const b of mine) {
          const points = JSON.stringify([cellKey(b.cell), b.x, b.mean]);
          const shared = baselines.get(points);
          if (shared) {
            shared.served.push(s.arm);
            shared.label = `baseline of ${shared.served.join(', ')}`;
            shared.color = themeColors().marker; // no longer one arm's
            continue;
          }
          const series = {...b, label: label(b), color: colorOf(b.arm, 'baseline', b.cell), dashed: true,
            rank: rank + 1, served: [s.arm]};
          baselines.set(points, series);
          out.push(series);
        }
      }
    }
    // Baselines drawn first, so every arm's line is on top; the legend keeps the pairs.
    return [...out.filter((s) => s.role !== 'arm'), ...out.filter((s) => s.role === 'arm')];
  }

  // --- reading ---------------------------------------------------------------------------

  async function load() {
    fetches.count++;
    root.dataset.fetches = String(fetches.count);
    root.fetchTimes.push(performance.now()); // for the browser tests: how far apart the reads were
    const [details, curves] = await Promise.all([api.study(id),
      api.studyCurves(id, {names: CURVES.map((c) => c.name), points: 300}).catch((e) => ({error: e}))]);
    if (stopped) return;
    study = details;
    document.title = `${study.name} · Study #${id} · MapSage`;
    assignColors(study.arms || []);
    // The details' `runs` is the list of runs; the header's, as the list and the stream have
    // it, their number.
    takeHeader({id: study.id, name: study.name, description: study.description, status: study.status,
      created_at: study.created_at, started_at: study.started_at, finished_at: study.finished_at,
      error: study.error, counts: study.counts, runs: new Set((study.runs || []).map((run) => run.id)).size,
      note: study.note, tags: study.tags, archived_at: study.archived_at});
    renderArms();
    renderForest();
    renderGradients();
    renderGrid();
    renderComparisons();
    renderRuns();
    specView.textContent = JSON.stringify(study.spec, null, 2);
    if (curves.error) {
      for (const {chart} of charts) chart.setEmpty(`could not load the curves: ${curves.error.message}`);
    } else {
      renderCurves(curves);
    }
    root.dataset.state = 'loaded';
    if (finished(header) && stream) {
      stream.close(); // it has ended: there is nothing more to follow
      stream = null;
    }
  }

  // At most one read a second, and never two at once; what asks in between is served by the
  // next read.
  function refetchSoon() {
    if (stopped) return;
    if (fetches.inFlight) {
      fetches.again = true;
      return;
    }
    if (fetches.timer) return;
    fetches.timer = setTimeout(async () => {
      fetches.timer = null;
      fetches.inFlight = true;
      fetches.last = Date.now();
      try {
        await load();
      } catch (e) {
        showError(`Could not read the study: ${e.message}`);
      } finally {
        fetches.inFlight = false;
        if (fetches.again) {
          fetches.again = false;
          refetchSoon();
        }
      }
    }, Math.max(0, fetches.last + REFETCH_GAP_MS - Date.now()));
  }

  function onStudy(event) {
    takeHeader(event);
    if (event.statistics_changed) refetchSoon();
  }

  function onEnd() {
    refetchSoon(); // the last statistics and finished_at
  }

  stream = openStream(streamUrl.study(id), {study: onStudy, run: (e) => takeRunEvent(e.id, e), end: onEnd},
    {onReopen: refetchSoon});
  fetches.inFlight = true;
  fetches.last = Date.now();
  load().catch((e) => {
    if (stopped) return;
    if (stream) stream.close();
    stream = null;
    clear(root, h('h1', {}, `Study #${id}`), h('p', {class: 'error'}, e.message),
      h('p', {}, h('a', {href: '#/studies'}, 'All studies')));
  }).finally(() => {
    fetches.inFlight = false;
    if (fetches.again) {
      fetches.again = false;
      refetchSoon();
    }
  });

  const ticker = setInterval(() => {
    if (header && !finished(header)) renderHeader();
  }, 1000);

  return () => {
    stopped = true;
    clearInterval(ticker);
    clearTimeout(fetches.timer);
    if (stream) stream.close();
    if (stopForest) stopForest();
    for (const {chart} of charts) chart.destroy();
  };
}

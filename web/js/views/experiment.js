// views/experiment.js — one experiment (#/experiments/7): live charts of every curve, its
// status and figures, its teacher, the stages, the checkpoints, the config, the worker and
// the run's log.
//
// How the curves stay complete without ever refetching: the experiment's details come first
// (GET /api/experiments/7: its curve names, so every chart is laid out before the points
// arrive, its stages and checkpoints), then the stored history (GET …/metrics), then the
// stream is opened with Last-Event-ID set to the last event the history holds ("<step>" or
// "<step>.<n>" when that step's evaluations are in it too), so the server replays exactly
// what came after and continues live. Each point is appended to its chart; a chart redraws
// once per animation frame.
//
// Stage boundaries come from the daemon: the details' `stages` (where each began) and the
// stream's `stage` events for the ones that begin later. A run recorded before the daemon
// kept stage starts has none; for it they are worked out as before, from the config's epochs
// per stage and the steps at which the evaluations say each epoch ended.

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {organiseControls} from './experiment_organise.js';
import {LiveChart, colorFor} from '../charts.js';
import {h, append, clear, confirmButton, formatAgo, formatBytes, formatCount, formatDuration, formatNumber,
  formatPercent, formatTime, runSeconds, statusBadge, ACTIVE} from '../dom.js';

const SPLIT_ORDER = {train: 1, val: 2, test: 3, teacher: 4}; // the <n> of an eval event's id
const EVALUATION = /^(train|val|test|teacher)\//; // per-epoch curves, by name (docs/api.md)
const PER_CLASS = 'test/accuracy/';

// Loss terms in the order the config's formula has them; the total first.
const TERMS = ['total', 'task', 'distill', 'feature', 'adversarial'];
const termRank = (name) => {
  const index = TERMS.indexOf(name.slice(name.indexOf('/') + 1));
  return index >= 0 ? index : TERMS.length;
};
const splitRank = (name) => SPLIT_ORDER[name.split('/')[0]] || 9;

// Every curve goes to the charts whose test it passes, or else to its kind's catch-all; page
// order is this order. perEpoch charts have the epoch on x; `bars` is the per-class view.
// The teacher's evaluations (`teacher/<split>/<name>`) are not curves: each is one value,
// drawn as a reference line on the chart its `<split>/<name>` goes to.
const CHARTS = [
  {key: 'loss', title: 'Loss terms (raw)', test: (n) => n.startsWith('loss/'), order: termRank},
  {key: 'weighted', title: 'Weighted terms, stacked: the top edge is loss/total',
    test: (n) => n.startsWith('weighted/') || n === 'loss/total', order: termRank,
    stacked: (n) => n.startsWith('weighted/')},
  {key: 'accuracy', title: 'Accuracy per epoch', perEpoch: true, test: (n) => /^(train|val|test)\/accuracy$/.test(n),
    order: splitRank, yBounds: [0, 1]},
  {key: 'eval-loss', title: 'Loss per epoch', perEpoch: true, test: (n) => /^(train|val|test)\/loss$/.test(n),
    order: splitRank},
  {key: 'per-class', title: 'Test accuracy per class', perEpoch: true, bars: true,
    test: (n) => n.startsWith(PER_CLASS) && n.length > PER_CLASS.length},
  {key: 'agreement', title: 'Agreement with the teacher (same predicted class)', perEpoch: true,
    test: (n) => /^(train|val|test)\/agreement$/.test(n), order: splitRank, yBounds: [0, 1]},
  {key: 'schedule', title: 'Learning rate and temperature', test: (n) => n === 'lr' || n === 'temperature',
    rightAxis: (n) => n === 'temperature', axisLabels: (names) => (names.includes('temperature')
      ? {y: 'lr', right: 'temperature'} : {})},
  {key: 'gate', title: 'Selective gate', test: (n) => n.startsWith('gate/') || n === 'feature/ungated_mse',
    rightAxis: (n) => n === 'feature/ungated_mse', axisLabels: (names) => (names.includes('feature/ungated_mse')
      ? {y: 'gate', right: 'ungated mse'} : {})},
  {key: 'disc', title: 'Discriminator', test: (n) => n.startsWith('disc/'), rightAxis: (n) => n === 'disc/loss',
    yBounds: [0, 1],
    axisLabels: (names) => (names.includes('disc/loss') && names.length > 1 ? {y: 'accuracy', right: 'loss'} : {})},
  {key: 'grad', title: 'Gradient norm per layer', test: (n) => n.startsWith('grad_norm/')},
  // Which term moves the student: each term's weighted share of the gradient (stacked, they
  // sum to one), and how each term's gradient points against the task's (below zero: the
  // objectives conflict). Judged by gradient, not by loss: a large loss can move little.
  {key: 'grad-share', title: 'Share of the gradient on the student, per term (stacked)',
    test: (n) => n.startsWith('grad_share/'), order: termRank, stacked: () => true, yBounds: [0, 1]},
  {key: 'grad-cosine', title: 'Cosine of each term\'s gradient with the task\'s', test: (n) => n.startsWith('grad_cos/'),
    yBounds: [-1, 1]},
  {key: 'grad-term', title: 'Gradient norm per term (raw)', test: (n) => n.startsWith('grad_norm_term/'),
    order: termRank},
  {key: 'speed', title: 'Examples per second', test: (n) => n === 'examples_per_s'},
  {key: 'diagnostics', title: 'Other curves', catchAll: true},
  {key: 'eval-other', title: 'Other evaluations', perEpoch: true, catchAll: true},
];

// Which charts a curve goes to (their keys): 'teacher' for the teacher's evaluations.
function routeOf(name, perEpoch = EVALUATION.test(name)) {
  if (perEpoch && name.startsWith('teacher/') && referenceChart(name)) return ['teacher'];
  const kind = CHARTS.filter((c) => !!c.perEpoch === perEpoch);
  const keys = kind.filter((c) => c.test && c.test(name)).map((c) => c.key);
  return keys.length ? keys : kind.filter((c) => c.catchAll).map((c) => c.key);
}

// The chart a teacher's value is a reference line on: where the student's curve of the
// same name is drawn (teacher/test/accuracy → the accuracy chart), if it is a line chart.
function referenceChart(name) {
  const own = name.slice('teacher/'.length);
  const spec = CHARTS.find((c) => c.perEpoch && !c.bars && c.test && c.test(own));
  return spec ? spec.key : null;
}

// The per-class view: one bar per class at the newest epoch (a line per class over the
// epochs is ten tangled lines; what one wants to see is which classes lag). Takes points as
// a LiveChart does, so the page feeds both the same way.
class ClassBars {
  constructor(parent, {title, overall}) {
    this.latest = new Map(); // class → {epoch, value}
    this.overall = overall; // epoch → the overall test accuracy, for the caption
    this.caption = h('figcaption', {}, title);
    this.list = h('div', {class: 'class-bars'});
    this.title = title;
    this.element = h('figure', {class: 'chart bars', dataset: {kind: 'per-class', classes: '0'}}, this.caption,
      this.list, h('p', {class: 'empty-note'}, 'loading…'));
    this.queued = false;
    parent.append(this.element);
  }

  declare() {}

  set(name, epoch, value) {
    if (value == null) return;
    const label = name.slice(PER_CLASS.length);
    const known = this.latest.get(label);
    if (!known || epoch >= known.epoch) this.latest.set(label, {epoch, value});
    this.schedule();
  }

  load(tables) {
    for (const [name, epochs, values] of tables) {
      if (epochs.length) this.set(name, epochs[epochs.length - 1], values[values.length - 1]);
    }
  }

  addRow(epoch, entries) {
    for (const [name, value] of entries) this.set(name, epoch, value);
    return true;
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => this.render());
  }

  redraw() {}

  setEmpty(text) {
    this.element.querySelector('.empty-note').textContent = text;
  }

  render() {
    this.queued = false;
    if (this.destroyed) return;
    let epoch = 0;
    for (const point of this.latest.values()) epoch = Math.max(epoch, point.epoch);
    const rows = [...this.latest].filter(([, point]) => point.epoch === epoch)
      .sort(([a], [b]) => a.localeCompare(b, 'en', {numeric: true}));
    const worst = Math.min(...rows.map(([, point]) => point.value));
    const overall = this.overall(epoch);
    clear(this.caption, this.title, rows.length ? h('span', {class: 'muted'},
      ` · epoch ${epoch}${overall != null ? ` · overall ${formatPercent(overall)}` : ''}`) : null);
    clear(this.list, rows.map(([label, {value}]) => h('div', {
      class: `class-row${value === worst && rows.length > 1 ? ' worst' : ''}`, dataset: {class: label}},
    h('span', {class: 'class-name', title: label}, label),
    h('span', {class: 'class-bar'}, h('span', {style: `width:${Math.max(0, Math.min(1, value)) * 100}%`})),
    h('span', {class: 'class-value'}, formatPercent(value)))));
    this.element.dataset.epoch = String(epoch);
    this.element.dataset.classes = String(rows.length);
    this.element.querySelector('.empty-note').hidden = rows.length > 0;
  }

  destroy() {
    this.destroyed = true;
  }
}

export function mount(root, {params}) {
  const id = Number(params[0]);
  document.title = `#${id} · MapSage`;
  let experiment = null;
  let teacher = null; // the teacher experiment's row, when the run learns from one
  let stream = null;
  let stopped = false;
  const charts = new Map(); // key → LiveChart (or ClassBars)
  const routes = new Map(); // `${perEpoch}:${name}` → [chart keys]
  const starts = new Map(); // stage index → {step: its first step, epoch: its first epoch, name}
  let startsFrom = null; // 'daemon' once it named a stage start; 'derived' for an older run
  let lastStage = null; // the stage of the newest metric seen (derived starts only)
  const teacherValues = new Map(); // 'teacher/test/accuracy' → its value
  const overallAccuracy = new Map(); // epoch → test/accuracy, for the per-class caption
  const live = {step: null, epoch: null, stage: null};
  let headerQueued = false;
  let lastDetailsFetch = 0;
  let shownCheckpoints = null;

  const title = h('h1');
  const meta = h('p', {class: 'meta'});
  const teacherLine = h('p', {class: 'meta teacher-line', hidden: true});
  // Made once: the header is redrawn every frame while the run reports, and an armed button
  // must survive that.
  const cancelButton = confirmButton('Cancel', 'Really cancel?', () => api.cancel(id).catch((e) => showError(e.message)),
    {class: 'danger', dataset: {action: 'cancel'}});
  const organise = organiseControls(id, {onChanged: (changed) => {
    experiment = {...experiment, ...changed};
    shownTitle = null;
    scheduleHeader();
  }, onError: (message) => showError(message)});
  const header = h('div', {class: 'run-header'}, title, meta, teacherLine, organise.shown,
    h('div', {class: 'actions'}, cancelButton, organise.buttons), organise.panel);
  let shownTitle = null;
  const figures = h('div', {class: 'figures'});
  const stagesStrip = h('div', {class: 'stages', hidden: true});
  const errorBox = h('p', {class: 'error', hidden: true});
  const chartsGrid = h('div', {class: 'charts'});
  const waiting = h('p', {class: 'empty'}, 'No points yet: the charts fill in as the run reports them.');
  const slots = new Map(CHARTS.map((c) => [c.key, h('div', {class: 'slot', hidden: true, dataset: {chart: c.key}})]));
  chartsGrid.append(...slots.values());
  const checkpointsCount = h('span', {class: 'muted count'});
  const checkpointsView = h('div', {class: 'checkpoints'});
  const logView = h('pre', {class: 'log'}, '…');
  const configView = h('pre', {class: 'config'});
  const workerView = h('dl', {class: 'worker'});
  append(root, header, figures, stagesStrip, errorBox, waiting, chartsGrid,
    h('details', {class: 'panel', open: true, dataset: {panel: 'checkpoints'}},
      h('summary', {}, 'Checkpoints ', checkpointsCount), checkpointsView),
    h('details', {class: 'panel', open: true}, h('summary', {}, 'Log ',
      h('button', {type: 'button', class: 'secondary small', onclick: () => fetchLog(true)}, 'Refresh')), logView),
    h('details', {class: 'panel'}, h('summary', {}, 'Config ',
      h('button', {type: 'button', class: 'secondary small', onclick: editAsNew}, 'Edit as new')), configView),
    h('details', {class: 'panel'}, h('summary', {}, 'Worker'), workerView));

  // --- stages ----------------------------------------------------------------------------

  const plannedStages = () => (experiment && experiment.config && experiment.config.stages) || [];
  const stageCount = () => Math.max(plannedStages().length, (experiment.progress || {}).stages || 0, starts.size);
  const stageName = (i) => (starts.get(i) || {}).name || (plannedStages()[i] || {}).name || `stage ${i + 1}`;

  // A stage start as the daemon says it ({stage, name, epoch, step}, step being the steps
  // done before it). Returns whether anything changed.
  function takeStage({stage, name, epoch, step}) {
    if (startsFrom !== 'daemon') {
      starts.clear(); // what was worked out gives way to what the daemon recorded
      startsFrom = 'daemon';
    }
    const known = starts.get(stage);
    if (known && known.step === step + 1 && known.name === name && known.epoch === epoch) return false;
    starts.set(stage, {step: step + 1, epoch, name});
    return true;
  }

  function stagesChanged() {
    for (const c of charts.values()) c.redraw();
    scheduleHeader();
  }

  // --- header ----------------------------------------------------------------------------

  function renderHeader() {
    headerQueued = false;
    if (!experiment) return;
    const e = experiment;
    const progress = {...(e.progress || {})};
    if (live.step != null && live.step >= (progress.step || 0)) Object.assign(progress, live);
    const count = stageCount();
    const parts = [];
    if (progress.epoch) parts.push(`epoch ${progress.epoch}/${progress.epochs ?? '?'}`);
    if (count > 1 && progress.stage != null) {
      parts.push(`stage ${progress.stage + 1}/${count} ${stageName(progress.stage)}`);
    }
    if (progress.step) parts.push(`step ${formatCount(progress.step)}`);
    parts.push(`created ${formatAgo(e.created_at)}`);
    const seconds = runSeconds(e);
    if (seconds != null) parts.push(`ran ${formatDuration(seconds)}`);
    if (e.attempts > 1) parts.push(`${e.attempts} attempts`);
    cancelButton.hidden = !ACTIVE.has(e.status);
    if (shownTitle !== `${e.name} ${e.status}`) {
      clear(title, h('span', {class: 'muted'}, `#${id} `), e.name || '(unnamed)', ' ', statusBadge(e.status));
      shownTitle = `${e.name} ${e.status}`;
    }
    meta.textContent = parts.join(' · ');
    organise.update(e);
    renderTeacher();
    if (charts.size === 0) {
      waiting.textContent = ACTIVE.has(e.status) ? 'No points yet: the charts fill in as the run reports them.'
        : 'This run recorded no points.';
    }
    const s = e.summary || {};
    const figure = (label, value, kind) => h('div', {class: 'figure', dataset: {figure: kind}},
      h('span', {class: 'value'}, value), h('span', {class: 'label'}, label));
    const teacherAccuracy = teacherValues.get('teacher/test/accuracy');
    clear(figures,
      e.summary ? [
        figure('final test accuracy', formatPercent(s.final_test_accuracy, 2), 'test'),
        figure(`best val accuracy${s.best_val_epoch ? ` (epoch ${s.best_val_epoch})` : ''}`,
          formatPercent(s.best_val_accuracy, 2), 'val'),
        figure('final test loss', formatNumber(s.final_test_loss), 'loss'),
        figure('examples/s', s.examples_per_s ? formatCount(Math.round(s.examples_per_s)) : '—', 'speed')] : null,
      teacherAccuracy != null ? figure(`teacher's test accuracy${e.teacher ? ` (#${e.teacher})` : ''}`,
        formatPercent(teacherAccuracy, 2), 'teacher') : null);
    figures.hidden = !figures.childElementCount;
    if (e.error) showError(e.error);
    renderStages();
  }

  function scheduleHeader() {
    if (headerQueued) return;
    headerQueued = true;
    requestAnimationFrame(renderHeader);
  }

  // "learns from #3 teacher-cnn (succeeded)", or a checkpoint file; while the run waits for
  // its teacher to finish, it says so.
  function renderTeacher() {
    const e = experiment;
    const fromCheckpoint = e.config && e.config.teacher && e.config.teacher.checkpoint;
    teacherLine.hidden = !e.teacher && !fromCheckpoint;
    if (teacherLine.hidden) return;
    const key = `${e.status} ${teacher ? `${teacher.name} ${teacher.status}` : ''}`;
    if (teacherLine.dataset.shown === key) return;
    teacherLine.dataset.shown = key;
    if (!e.teacher) {
      clear(teacherLine, 'learns from the checkpoint ', h('code', {}, fromCheckpoint));
      return;
    }
    const waitingFor = e.status === 'queued' && (!teacher || teacher.status !== 'succeeded');
    clear(teacherLine, waitingFor ? 'waiting for its teacher ' : 'learns from ',
      h('a', {href: `#/experiments/${e.teacher}`, class: 'teacher-link'}, `#${e.teacher}`,
        teacher && teacher.name ? ` ${teacher.name}` : ''),
      teacher ? [' ', statusBadge(teacher.status)] : null,
      waitingFor ? ' to finish' : null);
  }

  async function fetchTeacher() {
    if (!experiment || !experiment.teacher) return;
    try {
      const row = await api.experiment(experiment.teacher);
      if (stopped) return;
      teacher = {name: row.name, status: row.status};
      scheduleHeader();
    } catch { /* the line keeps the id, which is what matters */ }
  }

  function renderStages() {
    const planned = plannedStages();
    const count = stageCount();
    stagesStrip.hidden = count < 2;
    if (count < 2) return;
    const current = live.stage ?? (experiment.progress || {}).stage;
    let epoch = 1;
    clear(stagesStrip, h('span', {class: 'label'}, 'Stages'), Array.from({length: count}, (_, i) => {
      const first = (starts.get(i) || {}).epoch || epoch;
      const epochs = (planned[i] || {}).epochs;
      epoch = first + (epochs || 0);
      const start = starts.get(i);
      return [i > 0 ? h('span', {class: 'arrow'}, '→') : null,
        h('span', {class: `stage${current === i ? ' current' : ''}`, dataset: {stage: i}},
          h('b', {}, stageName(i)), epochs ? ` epochs ${first}–${first + epochs - 1}` : '',
          start != null ? ` · from step ${formatCount(start.step)}` : '')];
    }));
  }

  function showError(message) {
    errorBox.textContent = message || '';
    errorBox.hidden = !message;
  }

  // --- checkpoints -------------------------------------------------------------------------

  function renderCheckpoints() {
    const list = experiment.checkpoints || [];
    const key = `${experiment.status} ${JSON.stringify(list)}`;
    if (key === shownCheckpoints) return;
    shownCheckpoints = key;
    checkpointsCount.textContent = list.length ? `(${list.length})` : '';
    if (!list.length) {
      const every = experiment.config && experiment.config.checkpoint_every;
      const when = every ? `every ${every === 1 ? 'epoch' : `${every} epochs`} and at the end` : 'at the end';
      const text = !experiment.started_at ? (ACTIVE.has(experiment.status) ? 'None yet: the run has not started.'
        : 'None: the run never started.')
        : ACTIVE.has(experiment.status) ? `None yet: this run writes one ${when}.` : 'This run left no checkpoint.';
      clear(checkpointsView, h('p', {class: 'empty-note'}, text));
      return;
    }
    const rows = [...list].sort((a, b) => b.epoch - a.epoch); // newest first: where a run resumes
    clear(checkpointsView, h('div', {class: 'table-wrap checkpoints-wrap'}, h('table', {class: 'checkpoints'},
      h('thead', {}, h('tr', {}, h('th', {class: 'num'}, 'epoch'), h('th', {class: 'num'}, 'step'),
        h('th', {class: 'num'}, 'size'), h('th', {}, 'written'), h('th', {}, 'path'))),
      h('tbody', {}, rows.map((c, i) => h('tr', {dataset: {epoch: c.epoch}},
        h('td', {class: 'num', dataset: {label: 'epoch'}}, String(c.epoch),
          i === 0 && rows.length > 1 ? h('span', {class: 'muted'}, ' newest') : null),
        h('td', {class: 'num', dataset: {label: 'step'}}, formatCount(c.step)),
        h('td', {class: 'num', title: `${formatCount(c.bytes)} bytes`}, formatBytes(c.bytes)),
        h('td', {class: 'time', title: c.created_at || ''}, formatTime(c.created_at)),
        h('td', {class: 'path'}, h('code', {}, c.path))))))));
  }

  // --- charts ----------------------------------------------------------------------------

  function stepMarkers() {
    if (stageCount() < 2) return [];
    return [...starts].sort((a, b) => a[0] - b[0]).map(([stage, start]) => ({x: start.step, label: stageName(stage),
      line: stage > 0}));
  }

  function epochMarkers() {
    if (stageCount() < 2) return [];
    return [...starts].sort((a, b) => a[0] - b[0]).filter(([, start]) => start.epoch != null)
      .map(([stage, start]) => ({x: stage === 0 ? start.epoch : start.epoch - 0.5, label: stageName(stage),
        line: stage > 0}));
  }

  // The teacher's values drawn on a chart: "teacher test 91.2%".
  function referencesOf(key) {
    const lines = [];
    for (const [name, value] of teacherValues) {
      if (referenceChart(name) !== key) continue;
      const what = name.slice('teacher/'.length);
      const shown = what.endsWith('accuracy') ? formatPercent(value) : formatNumber(value);
      lines.push({y: value, label: `teacher ${what.replace(/\/(accuracy|loss)$/, ' $1')} ${shown}`,
        color: colorFor('teacher/test/accuracy')});
    }
    return lines;
  }

  function setTeacherValue(name, value) {
    if (value == null || teacherValues.get(name) === value) return;
    teacherValues.set(name, value);
    const key = referenceChart(name);
    if (key) chart(key).referencesChanged();
    scheduleHeader();
  }

  // The teacher's evaluation is stored at step 0, which GET …/metrics leaves out (it gives
  // steps after since_step, 0 by default), and the stream resumes after the history: a run
  // opened after it began would never see it. The worker's report has the same figures.
  function teacherFromWorker() {
    const reported = experiment.worker && experiment.worker.teacher;
    if (!reported) return;
    for (const [name, value] of [['teacher/test/accuracy', reported.accuracy], ['teacher/test/loss', reported.loss]]) {
      if (!teacherValues.has(name) && typeof value === 'number') setTeacherValue(name, value);
    }
  }

  function routesOf(name, perEpoch) {
    const key = `${perEpoch}:${name}`;
    let keys = routes.get(key);
    if (!keys) {
      keys = routeOf(name, perEpoch);
      routes.set(key, keys);
    }
    return keys;
  }

  function chart(key) {
    let c = charts.get(key);
    if (!c) {
      const spec = CHARTS.find((s) => s.key === key);
      const slot = slots.get(key);
      slot.hidden = false;
      waiting.hidden = true;
      if (spec.bars) {
        c = new ClassBars(slot, {title: spec.title, overall: (epoch) => overallAccuracy.get(epoch)});
      } else {
        c = new LiveChart(slot, {title: spec.title, kind: key, xLabel: spec.perEpoch ? 'epoch' : 'step',
          markers: spec.perEpoch ? epochMarkers : stepMarkers, rightAxis: spec.rightAxis, order: spec.order,
          stacked: spec.stacked, references: () => referencesOf(key), yBounds: spec.yBounds,
          label: spec.rightAxis ? (n) => (spec.rightAxis(n) ? `${n} (right)` : n) : undefined,
          sync: `run-${id}-${spec.perEpoch ? 'epoch' : 'step'}`});
      }
      charts.set(key, c);
    }
    return c;
  }

  // The run's curve names, before their points: each chart is laid out with its series, so
  // the page does not shift as a long history loads.
  function plan(series) {
    const byChart = new Map();
    for (const name of series || []) {
      for (const key of routesOf(name, EVALUATION.test(name))) {
        if (key === 'teacher') continue;
        if (!byChart.has(key)) byChart.set(key, []);
        byChart.get(key).push(name);
      }
    }
    for (const key of CHARTS.map((c) => c.key).filter((k) => byChart.has(k))) {
      const c = chart(key);
      c.declare(byChart.get(key));
      axisLabels(key);
    }
  }

  // Charts with a right axis name both axes once they have both kinds of series.
  function axisLabels(key) {
    const spec = CHARTS.find((s) => s.key === key);
    const c = charts.get(key);
    if (spec.axisLabels && c instanceof LiveChart) c.options.axisLabels = spec.axisLabels(c.names);
  }

  // Rows for each chart from one event's values: {chartKey: [[name, value], …]}.
  function addValues(x, names, values, perEpoch) {
    const rows = new Map();
    names.forEach((name, i) => {
      for (const key of routesOf(name, perEpoch)) {
        if (key === 'teacher') {
          setTeacherValue(name, values[i]);
          continue;
        }
        if (!rows.has(key)) rows.set(key, []);
        rows.get(key).push([name, values[i]]);
      }
    });
    for (const [key, entries] of rows) {
      const c = chart(key);
      const before = c.names && c.names.length;
      c.addRow(x, entries);
      if (c.names && c.names.length !== before) axisLabels(key);
    }
  }

  // --- history, then the stream ----------------------------------------------------------

  function loadHistory(curves) {
    const tables = new Map(); // chart key → [[name, xs, values]]
    let lastStep = -1;
    let phase = 0;
    for (const [name, curve] of Object.entries(curves)) {
      const perEpoch = Array.isArray(curve.epoch);
      for (const key of routesOf(name, perEpoch)) {
        if (key === 'teacher') {
          setTeacherValue(name, curve.value[curve.value.length - 1]);
          continue;
        }
        if (!tables.has(key)) tables.set(key, []);
        tables.get(key).push([name, perEpoch ? curve.epoch : curve.step, curve.value]);
      }
      if (name === 'test/accuracy') curve.epoch.forEach((epoch, i) => overallAccuracy.set(epoch, curve.value[i]));
      const last = curve.step[curve.step.length - 1];
      if (!perEpoch && last > lastStep) lastStep = last;
    }
    // Evaluations computed after the last step are in the history too: resume after them
    // (the teacher's, at step 0, may be all there is).
    for (const [name, curve] of Object.entries(curves)) {
      if (!Array.isArray(curve.epoch) || curve.step.length === 0) continue;
      const last = curve.step[curve.step.length - 1];
      const order = SPLIT_ORDER[name.split('/')[0]] || 0;
      if (last > lastStep) {
        lastStep = last;
        phase = order;
      } else if (last === lastStep) phase = Math.max(phase, order);
    }
    for (const [key, list] of tables) {
      chart(key).load(list);
      axisLabels(key);
    }
    if (startsFrom !== 'daemon') deriveStageStarts(curves, lastStep);
    teacherFromWorker();
    if (lastStep < 0) return null;
    return phase ? `${lastStep}.${phase}` : String(lastStep);
  }

  // For a run whose stage starts the daemon did not record (one from before it did).
  function deriveStageStarts(curves, lastStep) {
    const stages = plannedStages();
    if (lastStep <= 0) return;
    startsFrom = 'derived';
    starts.set(0, {step: 1, epoch: 1, name: stageName(0)});
    lastStage = 0;
    if (stages.length < 2) return;
    const endOfEpoch = new Map(); // epoch → the step it ended at
    for (const [name, curve] of Object.entries(curves)) {
      if (!Array.isArray(curve.epoch) || name.startsWith('teacher/')) continue;
      curve.epoch.forEach((epoch, i) => endOfEpoch.set(epoch, Math.max(endOfEpoch.get(epoch) || 0, curve.step[i])));
    }
    let epochs = 0;
    for (let k = 1; k < stages.length; k++) {
      epochs += stages[k - 1].epochs;
      const end = endOfEpoch.get(epochs);
      if (end == null || end >= lastStep) break; // stage k has not begun (or cannot be told)
      starts.set(k, {step: end + 1, epoch: epochs + 1, name: stageName(k)});
      lastStage = k;
    }
  }

  function onStage(event) {
    if (takeStage(event)) stagesChanged();
  }

  function onMetric(event) {
    // Only for a run without recorded stage starts: a change of stage marks a boundary.
    if (startsFrom !== 'daemon' && !starts.has(event.stage) && (lastStage === null || event.stage !== lastStage)) {
      startsFrom = 'derived';
      starts.set(event.stage, {step: event.step, epoch: event.epoch, name: stageName(event.stage)});
      if (lastStage !== null) stagesChanged();
    }
    lastStage = event.stage;
    const names = Object.keys(event.values);
    addValues(event.step, names, names.map((n) => event.values[n]), false);
    Object.assign(live, {step: event.step, epoch: event.epoch, stage: event.stage});
    scheduleHeader();
  }

  function onEval(event) {
    const names = Object.keys(event.values);
    if (event.split === 'test' && event.values.accuracy != null) {
      overallAccuracy.set(event.epoch, event.values.accuracy);
    }
    addValues(event.epoch, names.map((n) => `${event.split}/${n}`), names.map((n) => event.values[n]), true);
    if (event.split !== 'teacher') {
      Object.assign(live, {step: event.step, epoch: event.epoch, stage: event.stage});
      // An epoch ended: a log line, perhaps a checkpoint. Worth a look, not every time.
      if (Date.now() - lastDetailsFetch > 3000) {
        lastDetailsFetch = Date.now();
        fetchLog(false);
        refresh();
      }
    }
    scheduleHeader();
  }

  function onStatus(event) {
    const changed = event.status !== experiment.status;
    Object.assign(experiment, {status: event.status, error: event.error, attempts: event.attempts});
    scheduleHeader();
    // started_at and the worker's report arrive with the run: read them once it runs.
    if (event.status === 'running' && !experiment.worker) setTimeout(refresh, 500);
    if (changed) fetchTeacher();
  }

  async function onEnd(event) {
    Object.assign(experiment, {status: event.status, error: event.error});
    scheduleHeader();
    await refresh(); // summary, finished_at, the last checkpoint
    fetchLog(true);
  }

  async function refresh() {
    try {
      const fresh = await api.experiment(id);
      if (stopped) return;
      const workerChanged = JSON.stringify(fresh.worker) !== JSON.stringify(experiment.worker);
      experiment = fresh;
      if (workerChanged) {
        renderWorker(fresh.worker);
        teacherFromWorker();
      }
      let changed = false;
      for (const stage of fresh.stages || []) changed = takeStage(stage) || changed;
      if (changed) stagesChanged();
      renderCheckpoints();
      scheduleHeader();
    } catch { /* the stream keeps the status; the figures wait for the next try */ }
  }

  // --- log, config, worker ----------------------------------------------------------------

  async function fetchLog(force) {
    try {
      const text = await api.log(id);
      if (stopped) return;
      const atBottom = logView.scrollTop + logView.clientHeight >= logView.scrollHeight - 4;
      logView.textContent = text || '(nothing logged yet)';
      if (atBottom || force) logView.scrollTop = logView.scrollHeight;
    } catch (e) {
      logView.textContent = `could not read the log: ${e.message}`;
    }
  }

  function renderWorker(worker) {
    clear(workerView);
    if (!worker) {
      workerView.append(h('dd', {}, 'No worker has started this run yet.'));
      return;
    }
    const flat = (object, prefix) => Object.entries(object).flatMap(([key, value]) =>
      value && typeof value === 'object' && !Array.isArray(value) ? flat(value, `${prefix}${key}.`)
        : [[`${prefix}${key}`, value]]);
    for (const [key, value] of flat(worker, '')) {
      workerView.append(h('dt', {}, key), h('dd', {}, typeof value === 'number' ? formatCount(value) : String(value)));
    }
  }

  function editAsNew(event) {
    event.preventDefault(); // the button sits in a <summary>
    const config = {...experiment.config};
    try {
      sessionStorage.setItem('mapsage.draft', JSON.stringify(config, null, 2));
    } catch { /* the submit page then starts from a template */ }
    location.hash = '#/submit';
  }

  // --- start -----------------------------------------------------------------------------

  (async () => {
    try {
      experiment = await api.experiment(id);
    } catch (e) {
      clear(root, h('h1', {}, `Experiment #${id}`), h('p', {class: 'error'}, e.message),
        h('p', {}, h('a', {href: '#/experiments'}, 'All experiments')));
      return;
    }
    if (stopped) return;
    document.title = `#${id} ${experiment.name} · MapSage`;
    for (const stage of experiment.stages || []) takeStage(stage);
    plan(experiment.series);
    renderHeader();
    renderCheckpoints();
    configView.textContent = JSON.stringify(experiment.config, null, 2);
    renderWorker(experiment.worker);
    fetchLog(true);
    fetchTeacher();
    lastDetailsFetch = Date.now();
    let cursor = null;
    try {
      cursor = loadHistory(await api.metrics(id));
    } catch (e) {
      showError(`could not load the curves: ${e.message}`);
    }
    if (stopped) return;
    for (const c of charts.values()) c.setEmpty('no points yet'); // declared, and nothing stored
    renderStages();
    stream = openStream(streamUrl.experiment(id),
      {status: onStatus, metric: onMetric, eval: onEval, stage: onStage, end: onEnd},
      {lastEventId: cursor});
  })();

  const ticker = setInterval(() => {
    if (experiment && experiment.status === 'running') scheduleHeader();
  }, 1000);

  return () => {
    stopped = true;
    clearInterval(ticker);
    if (stream) stream.close();
    for (const c of charts.values()) c.destroy();
  };
}

// views/experiment.js — one experiment (#/experiments/7): live charts of every curve, its
// status and figures, the stages, the config, the worker and the run's log.
//
// How the curves stay complete without ever refetching: the stored history comes first
// (GET …/metrics), then the stream is opened with Last-Event-ID set to the last event the
// history holds ("<step>" or "<step>.<n>" when that step's evaluations are in it too), so the
// server replays exactly what came after and continues live. Each point is appended to its
// chart; a chart redraws once per animation frame.
//
// Stage boundaries: the history's per-step curves carry no stage, so the first step of each
// stage is derived from the config (epochs per stage) and the evaluations (the step at which
// each epoch ended); live metric events carry `stage`, and a change marks a boundary.

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {LiveChart} from '../charts.js';
import {h, append, clear, confirmButton, formatAgo, formatCount, formatDuration, formatNumber, formatPercent, runSeconds,
  statusBadge, ACTIVE} from '../dom.js';

const SPLIT_ORDER = {train: 1, val: 2, test: 3, teacher: 4}; // the <n> of an eval event's id

// Every curve goes to the charts whose test it passes, or else to its kind's catch-all; page
// order is this order. perEpoch charts have the epoch on x.
const CHARTS = [
  {key: 'loss', title: 'Loss terms (raw)', test: (n) => n.startsWith('loss/')},
  {key: 'weighted', title: 'Weighted terms (they add up to loss/total)',
    test: (n) => n.startsWith('weighted/') || n === 'loss/total'},
  {key: 'accuracy', title: 'Accuracy per epoch', perEpoch: true,
    test: (n) => /^(train|val|test)\/accuracy$/.test(n) || /^teacher\/(.+\/)?accuracy$/.test(n)},
  {key: 'eval-loss', title: 'Loss per epoch', perEpoch: true,
    test: (n) => /^(train|val|test|teacher)\/(.+\/)?loss$/.test(n)},
  {key: 'schedule', title: 'Learning rate and temperature', test: (n) => n === 'lr' || n === 'temperature',
    rightAxis: (n) => n === 'temperature'},
  {key: 'speed', title: 'Examples per second', test: (n) => n === 'examples_per_s'},
  {key: 'grad', title: 'Gradient norm per layer', test: (n) => n.startsWith('grad_norm/')},
  {key: 'per-class', title: 'Test accuracy per class', perEpoch: true, test: (n) => /^test\/accuracy\/./.test(n)},
  {key: 'diagnostics', title: 'Diagnostics', catchAll: true},
  {key: 'eval-other', title: 'Other evaluations', perEpoch: true, catchAll: true},
];

export function mount(root, {params}) {
  const id = Number(params[0]);
  document.title = `#${id} · MapSage`;
  let experiment = null;
  let stream = null;
  let stopped = false;
  const charts = new Map(); // key → LiveChart
  const routes = new Map(); // `${perEpoch}:${name}` → [chart keys]
  const stageStarts = new Map(); // stage index → its first step
  let lastStage = null; // the stage of the newest metric seen
  const live = {step: null, epoch: null, stage: null};
  let headerQueued = false;
  let lastLogFetch = 0;

  const title = h('h1');
  const meta = h('p', {class: 'meta'});
  const teacherLine = h('p', {class: 'meta', hidden: true});
  // Made once: the header is redrawn every frame while the run reports, and an armed button
  // must survive that.
  const cancelButton = confirmButton('Cancel', 'Really cancel?', () => api.cancel(id).catch((e) => showError(e.message)),
    {class: 'danger', dataset: {action: 'cancel'}});
  const header = h('div', {class: 'run-header'}, title, meta, teacherLine, h('div', {class: 'actions'}, cancelButton));
  let shownTitle = null;
  const figures = h('div', {class: 'figures'});
  const stagesStrip = h('div', {class: 'stages', hidden: true});
  const errorBox = h('p', {class: 'error', hidden: true});
  const chartsGrid = h('div', {class: 'charts'});
  const waiting = h('p', {class: 'empty'}, 'No points yet: the charts fill in as the run reports them.');
  const slots = new Map(CHARTS.map((c) => [c.key, h('div', {class: 'slot', hidden: true, dataset: {chart: c.key}})]));
  chartsGrid.append(...slots.values());
  const logView = h('pre', {class: 'log'}, '…');
  const configView = h('pre', {class: 'config'});
  const workerView = h('dl', {class: 'worker'});
  append(root, header, figures, stagesStrip, errorBox, waiting, chartsGrid,
    h('details', {class: 'panel', open: true}, h('summary', {}, 'Log ',
      h('button', {type: 'button', class: 'secondary small', onclick: () => fetchLog(true)}, 'Refresh')), logView),
    h('details', {class: 'panel'}, h('summary', {}, 'Config ',
      h('button', {type: 'button', class: 'secondary small', onclick: editAsNew}, 'Edit as new')), configView),
    h('details', {class: 'panel'}, h('summary', {}, 'Worker'), workerView));

  // --- header ----------------------------------------------------------------------------

  const stageNames = () => ((experiment && experiment.config && experiment.config.stages) || []).map(
    (s, i) => s.name || `stage ${i + 1}`);

  function renderHeader() {
    headerQueued = false;
    if (!experiment) return;
    const e = experiment;
    const progress = {...(e.progress || {})};
    if (live.step != null && live.step >= (progress.step || 0)) Object.assign(progress, live);
    const names = stageNames();
    const parts = [];
    if (progress.epoch) parts.push(`epoch ${progress.epoch}/${progress.epochs ?? '?'}`);
    if (names.length > 1 && progress.stage != null) {
      parts.push(`stage ${progress.stage + 1}/${names.length} ${names[progress.stage] || ''}`);
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
    const teacher = (e.config && e.config.teacher) || null;
    teacherLine.hidden = !teacher;
    if (teacher && !teacherLine.childElementCount) {
      clear(teacherLine, 'learns from ', teacher.experiment
        ? h('a', {href: `#/experiments/${teacher.experiment}`}, `teacher #${teacher.experiment}`)
        : h('code', {}, teacher.checkpoint || JSON.stringify(teacher)));
    }
    if (charts.size === 0) {
      waiting.textContent = ACTIVE.has(e.status) ? 'No points yet: the charts fill in as the run reports them.'
        : 'This run recorded no points.';
    }
    const s = e.summary || {};
    const figure = (label, value) => h('div', {class: 'figure'}, h('span', {class: 'value'}, value),
      h('span', {class: 'label'}, label));
    clear(figures,
      figure('final test accuracy', formatPercent(s.final_test_accuracy, 2)),
      figure(`best val accuracy${s.best_val_epoch ? ` (epoch ${s.best_val_epoch})` : ''}`,
        formatPercent(s.best_val_accuracy, 2)),
      figure('final test loss', formatNumber(s.final_test_loss)),
      figure('examples/s', s.examples_per_s ? formatCount(Math.round(s.examples_per_s)) : '—'));
    figures.hidden = !e.summary;
    if (e.error) showError(e.error);
    renderStages();
  }

  function scheduleHeader() {
    if (headerQueued) return;
    headerQueued = true;
    requestAnimationFrame(renderHeader);
  }

  function renderStages() {
    const names = stageNames();
    stagesStrip.hidden = names.length < 2;
    if (names.length < 2) return;
    const stages = experiment.config.stages;
    const current = live.stage ?? (experiment.progress || {}).stage;
    let epoch = 1;
    clear(stagesStrip, h('span', {class: 'label'}, 'Stages'), stages.map((stage, i) => {
      const first = epoch;
      epoch += stage.epochs;
      const start = stageStarts.get(i);
      return [i > 0 ? h('span', {class: 'arrow'}, '→') : null,
        h('span', {class: `stage${current === i ? ' current' : ''}`, dataset: {stage: i}},
          h('b', {}, names[i]), ` epochs ${first}–${epoch - 1}`,
          start != null ? ` · from step ${formatCount(start)}` : '')];
    }));
  }

  function showError(message) {
    errorBox.textContent = message || '';
    errorBox.hidden = !message;
  }

  // --- charts ----------------------------------------------------------------------------

  function stepMarkers() {
    const names = stageNames();
    if (names.length < 2) return [];
    return [...stageStarts].map(([stage, step]) => ({x: step, label: names[stage] || `stage ${stage + 1}`,
      line: stage > 0}));
  }

  function epochMarkers() {
    const names = stageNames();
    if (names.length < 2) return [];
    let epoch = 1;
    return experiment.config.stages.map((stage, i) => {
      const marker = {x: i === 0 ? 1 : epoch - 0.5, label: names[i], line: i > 0};
      epoch += stage.epochs;
      return marker;
    });
  }

  function routeOf(name, perEpoch) {
    const key = `${perEpoch}:${name}`;
    let keys = routes.get(key);
    if (!keys) {
      const kind = CHARTS.filter((c) => !!c.perEpoch === perEpoch);
      keys = kind.filter((c) => c.test && c.test(name)).map((c) => c.key);
      if (keys.length === 0) keys = kind.filter((c) => c.catchAll).map((c) => c.key);
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
      c = new LiveChart(slot, {title: spec.title, kind: key, xLabel: spec.perEpoch ? 'epoch' : 'step',
        markers: spec.perEpoch ? epochMarkers : stepMarkers, rightAxis: spec.rightAxis,
        sync: `run-${id}-${spec.perEpoch ? 'epoch' : 'step'}`});
      charts.set(key, c);
    }
    return c;
  }

  // Rows for each chart from one event's values: {chartKey: [[name, value], …]}.
  function addValues(x, names, values, perEpoch) {
    const rows = new Map();
    names.forEach((name, i) => {
      for (const key of routeOf(name, perEpoch)) {
        if (!rows.has(key)) rows.set(key, []);
        rows.get(key).push([name, values[i]]);
      }
    });
    for (const [key, entries] of rows) chart(key).addRow(x, entries);
  }

  // --- history, then the stream ----------------------------------------------------------

  function loadHistory(curves) {
    const tables = new Map(); // chart key → [[name, xs, values]]
    let lastStep = 0;
    let phase = 0;
    for (const [name, curve] of Object.entries(curves)) {
      const perEpoch = Array.isArray(curve.epoch);
      for (const key of routeOf(name, perEpoch)) {
        if (!tables.has(key)) tables.set(key, []);
        tables.get(key).push([name, perEpoch ? curve.epoch : curve.step, curve.value]);
      }
      const last = curve.step[curve.step.length - 1];
      if (!perEpoch && last > lastStep) lastStep = last;
    }
    // Evaluations computed after the last step are in the history too: resume after them.
    for (const [name, curve] of Object.entries(curves)) {
      if (!Array.isArray(curve.epoch) || curve.step.length === 0) continue;
      const last = curve.step[curve.step.length - 1];
      const order = SPLIT_ORDER[name.split('/')[0]] || 0;
      if (last > lastStep) {
        lastStep = last;
        phase = order;
      } else if (last === lastStep) phase = Math.max(phase, order);
    }
    for (const [key, list] of tables) chart(key).load(list);
    deriveStageStarts(curves, lastStep);
    if (lastStep === 0) return null;
    return phase ? `${lastStep}.${phase}` : String(lastStep);
  }

  function deriveStageStarts(curves, lastStep) {
    const stages = (experiment.config && experiment.config.stages) || [];
    if (lastStep === 0) return;
    stageStarts.set(0, 1);
    lastStage = 0;
    if (stages.length < 2) return;
    const endOfEpoch = new Map(); // epoch → the step it ended at
    for (const curve of Object.values(curves)) {
      if (!Array.isArray(curve.epoch)) continue;
      curve.epoch.forEach((epoch, i) => endOfEpoch.set(epoch, Math.max(endOfEpoch.get(epoch) || 0, curve.step[i])));
    }
    let epochs = 0;
    for (let k = 1; k < stages.length; k++) {
      epochs += stages[k - 1].epochs;
      const end = endOfEpoch.get(epochs);
      if (end == null || end >= lastStep) break; // stage k has not begun (or cannot be told)
      stageStarts.set(k, end + 1);
      lastStage = k;
    }
  }

  function onMetric(event) {
    if (lastStage !== null && event.stage !== lastStage && !stageStarts.has(event.stage)) {
      stageStarts.set(event.stage, event.step);
      for (const c of charts.values()) c.redraw();
    } else if (lastStage === null && !stageStarts.has(event.stage)) {
      stageStarts.set(event.stage, event.step); // streaming from the first step
    }
    lastStage = event.stage;
    const names = Object.keys(event.values);
    addValues(event.step, names, names.map((n) => event.values[n]), false);
    Object.assign(live, {step: event.step, epoch: event.epoch, stage: event.stage});
    scheduleHeader();
  }

  function onEval(event) {
    const names = Object.keys(event.values);
    addValues(event.epoch, names.map((n) => `${event.split}/${n}`), names.map((n) => event.values[n]), true);
    Object.assign(live, {step: event.step, epoch: event.epoch, stage: event.stage});
    scheduleHeader();
    if (Date.now() - lastLogFetch > 3000) fetchLog(false); // a line per epoch: worth a look
  }

  function onStatus(event) {
    Object.assign(experiment, {status: event.status, error: event.error, attempts: event.attempts});
    scheduleHeader();
    // started_at and the worker's report arrive with the run: read them once it runs.
    if (event.status === 'running' && !experiment.worker) setTimeout(refresh, 500);
  }

  async function onEnd(event) {
    Object.assign(experiment, {status: event.status, error: event.error});
    scheduleHeader();
    await refresh(); // summary, finished_at
    fetchLog(true);
  }

  async function refresh() {
    try {
      const fresh = await api.experiment(id);
      if (stopped) return;
      const workerChanged = JSON.stringify(fresh.worker) !== JSON.stringify(experiment.worker);
      experiment = fresh;
      if (workerChanged) renderWorker(fresh.worker);
      scheduleHeader();
    } catch { /* the stream keeps the status; the figures wait for the next try */ }
  }

  // --- log, config, worker ----------------------------------------------------------------

  async function fetchLog(force) {
    lastLogFetch = Date.now();
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
    renderHeader();
    configView.textContent = JSON.stringify(experiment.config, null, 2);
    renderWorker(experiment.worker);
    fetchLog(true);
    let cursor = null;
    try {
      cursor = loadHistory(await api.metrics(id));
    } catch (e) {
      showError(`could not load the curves: ${e.message}`);
    }
    if (stopped) return;
    renderStages();
    stream = openStream(streamUrl.experiment(id),
      {status: onStatus, metric: onMetric, eval: onEval, end: onEnd},
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

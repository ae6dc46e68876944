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
//
// The page is in three modules: this one (the header, the stream and the history, feeding
// the charts), experiment_charts.js (which chart each curve goes to, the per-class bars),
// experiment_panels.js (the checkpoints and the worker's report); ../organise.js has its
// name, tags, note, archive and delete.

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {organiseControls} from '../organise.js';
import {checkpointsPanel, datasetLine, workerPanel} from './experiment_panels.js';
import {CHARTS, ClassBars, EVALUATION, SPLIT_ORDER, referenceChart, routeOf} from './experiment_charts.js';
import {LiveChart, colorFor} from '../charts.js';
import {h, append, clear, confirmButton, formatAgo, formatCount, formatDuration, formatNumber,
  formatPercent, runSeconds, statusBadge, ACTIVE} from '../dom.js';

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
  const datasetView = h('p', {class: 'meta dataset-line', hidden: true});
  // Made once: the header is redrawn every frame while the run reports, and an armed button
  // must survive that.
  const cancelButton = confirmButton('Cancel', 'Really cancel?', () => api.cancel(id).catch((e) => showError(e.message)),
    {class: 'danger', dataset: {action: 'cancel'}});
  const organise = organiseControls({patch: (changes) => api.patchExperiment(id, changes),
    remove: () => api.deleteExperiment(id), done: () => { location.hash = '#/experiments'; }, onChanged: (changed) => {
    experiment = {...experiment, ...changed};
    shownTitle = null;
    scheduleHeader();
  }, onError: (message) => showError(message)});
  const header = h('div', {class: 'run-header'}, title, meta, datasetView, teacherLine, organise.shown,
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
    // A run on a Slurm cluster (docs/slurm.md): its job, and why it waits in Slurm's words.
    if (e.job) {
      parts.push(`Slurm job ${e.job.id ?? '(submitting)'} ${e.job.state}${e.job.reason ? ` (${e.job.reason})` : ''}`
        + `${e.job.node ? ` on ${e.job.node}` : ''}`);
    }
    cancelButton.hidden = !ACTIVE.has(e.status);
    if (shownTitle !== `${e.name} ${e.status}`) {
      clear(title, h('span', {class: 'muted'}, `#${id} `), e.name || '(unnamed)', ' ', statusBadge(e.status));
      shownTitle = `${e.name} ${e.status}`;
    }
    meta.textContent = parts.join(' · ');
    organise.update(e);
    renderDataset();
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

  function renderDataset() {
    const key = `${experiment.dataset} ${experiment.dataset_checksum}`;
    if (datasetView.dataset.shown === key) return;
    datasetView.dataset.shown = key;
    const line = datasetLine(experiment);
    datasetView.hidden = !line;
    clear(datasetView, line);
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
    clear(checkpointsView, checkpointsPanel(experiment));
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
    // A job's state and reason change while the run stays queued: each change comes as a status event.
    else if (event.status === 'queued' && experiment.job) setTimeout(refresh, 0);
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
    clear(workerView, workerPanel(worker));
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

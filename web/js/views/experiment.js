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
// The page is in these modules around one state object (`page` below; its `run` is the
// state the parts share): this one fetches, wires the stream to the parts and unmounts;
// experiment_header.js has the header (title, progress, teacher, figures, stages strip,
// error, organising controls), experiment_charts.js the charts (which chart each curve goes
// to, the per-class bars, the live chart set), experiment_stages.js where each stage began,
// experiment_panels.js the panels (checkpoints, log, config, worker).

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {RunPanels} from './experiment_panels.js';
import {RunCharts} from './experiment_charts.js';
import {RunHeader} from './experiment_header.js';
import {StageStarts} from './experiment_stages.js';
import {h, append, clear} from '../dom.js';

// The page's parts and its state: the experiment as last read, its teacher's row, where
// the stream says the run is, and whether the page is gone.
function makePage(id) {
  const run = {id, experiment: null, teacher: null, live: {step: null, epoch: null, stage: null}, stopped: false};
  const page = {run, stream: null, lastDetailsFetch: 0};
  page.stages = new StageStarts(run);
  page.charts = new RunCharts({id, stages: page.stages, onChange: () => page.header.schedule()});
  page.header = new RunHeader({run, stages: page.stages, charts: page.charts});
  page.panels = new RunPanels(run);
  return page;
}

function stagesChanged(page) {
  page.charts.redraw();
  page.header.schedule();
}

// --- the stream --------------------------------------------------------------------------

function onStage(page, event) {
  if (page.stages.take(event)) stagesChanged(page);
}

function onMetric(page, event) {
  if (page.stages.takeMetric(event)) stagesChanged(page);
  const names = Object.keys(event.values);
  page.charts.addValues(event.step, names, names.map((n) => event.values[n]), false);
  Object.assign(page.run.live, {step: event.step, epoch: event.epoch, stage: event.stage});
  page.header.schedule();
}

function onEval(page, event) {
  page.charts.addEvaluation(event);
  if (event.split !== 'teacher') {
    Object.assign(page.run.live, {step: event.step, epoch: event.epoch, stage: event.stage});
    // An epoch ended: a log line, perhaps a checkpoint. Worth a look, not every time.
    if (Date.now() - page.lastDetailsFetch > 3000) {
      page.lastDetailsFetch = Date.now();
      page.panels.fetchLog(false);
      refresh(page);
    }
  }
  page.header.schedule();
}

function onStatus(page, event) {
  const experiment = page.run.experiment;
  const changed = event.status !== experiment.status;
  Object.assign(experiment, {status: event.status, error: event.error, attempts: event.attempts});
  page.header.schedule();
  // started_at and the worker's report arrive with the run: read them once it runs.
  if (event.status === 'running' && !experiment.worker) setTimeout(() => refresh(page), 500);
  // A job's state and reason change while the run stays queued: each change comes as a status event.
  else if (event.status === 'queued' && experiment.job) setTimeout(() => refresh(page), 0);
  if (changed) page.header.fetchTeacher();
}

async function onEnd(page, event) {
  Object.assign(page.run.experiment, {status: event.status, error: event.error});
  page.header.schedule();
  await refresh(page); // summary, finished_at, the last checkpoint
  page.panels.fetchLog(true);
}

async function refresh(page) {
  const run = page.run;
  try {
    const fresh = await api.experiment(run.id);
    if (run.stopped) return;
    const workerChanged = JSON.stringify(fresh.worker) !== JSON.stringify(run.experiment.worker);
    run.experiment = fresh;
    if (workerChanged) {
      page.panels.renderWorker(fresh.worker);
      page.charts.teacherFromWorker(fresh);
    }
    let changed = false;
    for (const stage of fresh.stages || []) changed = page.stages.take(stage) || changed;
    if (changed) stagesChanged(page);
    page.panels.renderCheckpoints();
    page.header.schedule();
  } catch { /* the stream keeps the status; the figures wait for the next try */ }
}

// --- start: the details, the history, then the stream --------------------------------------

async function start(page, root) {
  const {run, stages, charts, header, panels} = page;
  const id = run.id;
  try {
    run.experiment = await api.experiment(id);
  } catch (e) {
    clear(root, h('h1', {}, `Experiment #${id}`), h('p', {class: 'error'}, e.message),
      h('p', {}, h('a', {href: '#/experiments'}, 'All experiments')));
    return;
  }
  if (run.stopped) return;
  const experiment = run.experiment;
  document.title = `#${id} ${experiment.name} · MapSage`;
  for (const stage of experiment.stages || []) stages.take(stage);
  charts.plan(experiment.series);
  header.render();
  panels.renderCheckpoints();
  panels.renderConfig();
  panels.renderWorker(experiment.worker);
  panels.fetchLog(true);
  header.fetchTeacher();
  page.lastDetailsFetch = Date.now();
  let cursor = null;
  try {
    cursor = charts.loadHistory(await api.metrics(id));
    charts.teacherFromWorker(run.experiment);
  } catch (e) {
    header.showError(`could not load the curves: ${e.message}`);
  }
  if (run.stopped) return;
  charts.setEmpty('no points yet'); // declared, and nothing stored
  header.renderStages();
  const handle = (handler) => (event) => handler(page, event);
  page.stream = openStream(streamUrl.experiment(id),
    {status: handle(onStatus), metric: handle(onMetric), eval: handle(onEval), stage: handle(onStage),
      end: handle(onEnd)},
    {lastEventId: cursor});
}

export function mount(root, {params}) {
  const id = Number(params[0]);
  document.title = `#${id} · MapSage`;
  const page = makePage(id);
  append(root, ...page.header.elements, page.charts.waiting, page.charts.grid, ...page.panels.elements);
  start(page, root);
  const ticker = setInterval(() => {
    if (page.run.experiment && page.run.experiment.status === 'running') page.header.schedule();
  }, 1000);
  return () => {
    page.run.stopped = true;
    clearInterval(ticker);
    if (page.stream) page.stream.close();
    page.charts.destroy();
  };
}

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
// The page is in these modules around one state object (`run` below): this one fetches,
// wires the stream to the parts and unmounts; experiment_header.js has the header (title,
// progress, teacher, figures, stages strip, error, organising controls),
// experiment_charts.js the charts (which chart each curve goes to, the per-class bars, the
// live chart set), experiment_stages.js where each stage began, experiment_panels.js the
// panels (checkpoints, log, config, worker).

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {RunPanels} from './experiment_panels.js';
import {RunCharts} from './experiment_charts.js';
import {RunHeader} from './experiment_header.js';
import {StageStarts} from './experiment_stages.js';
import {h, append, clear} from '../dom.js';

export function mount(root, {params}) {
  const id = Number(params[0]);
  document.title = `#${id} · MapSage`;
  // The page's state: the experiment as last read, its teacher's row, where the stream says
  // the run is, and whether the page is gone.
  const run = {id, experiment: null, teacher: null, live: {step: null, epoch: null, stage: null}, stopped: false};
  let stream = null;
  let lastDetailsFetch = 0;
  const stages = new StageStarts(run);
  const charts = new RunCharts({id, stages, onChange: () => header.schedule()});
  const header = new RunHeader({run, stages, charts});
  const panels = new RunPanels(run);
  append(root, ...header.elements, charts.waiting, charts.grid, ...panels.elements);

  function stagesChanged() {
    charts.redraw();
    header.schedule();
  }

  // --- the stream ------------------------------------------------------------------------

  function onStage(event) {
    if (stages.take(event)) stagesChanged();
  }

  function onMetric(event) {
    if (stages.takeMetric(event)) stagesChanged();
    const names = Object.keys(event.values);
    charts.addValues(event.step, names, names.map((n) => event.values[n]), false);
    Object.assign(run.live, {step: event.step, epoch: event.epoch, stage: event.stage});
    header.schedule();
  }

  function onEval(event) {
    charts.addEvaluation(event);
    if (event.split !== 'teacher') {
      Object.assign(run.live, {step: event.step, epoch: event.epoch, stage: event.stage});
      // An epoch ended: a log line, perhaps a checkpoint. Worth a look, not every time.
      if (Date.now() - lastDetailsFetch > 3000) {
        lastDetailsFetch = Date.now();
        panels.fetchLog(false);
        refresh();
      }
    }
    header.schedule();
  }

  function onStatus(event) {
    const experiment = run.experiment;
    const changed = event.status !== experiment.status;
    Object.assign(experiment, {status: event.status, error: event.error, attempts: event.attempts});
    header.schedule();
    // started_at and the worker's report arrive with the run: read them once it runs.
    if (event.status === 'running' && !experiment.worker) setTimeout(refresh, 500);
    // A job's state and reason change while the run stays queued: each change comes as a status event.
    else if (event.status === 'queued' && experiment.job) setTimeout(refresh, 0);
    if (changed) header.fetchTeacher();
  }

  async function onEnd(event) {
    Object.assign(run.experiment, {status: event.status, error: event.error});
    header.schedule();
    await refresh(); // summary, finished_at, the last checkpoint
    panels.fetchLog(true);
  }

  async function refresh() {
    try {
      const fresh = await api.experiment(id);
      if (run.stopped) return;
      const workerChanged = JSON.stringify(fresh.worker) !== JSON.stringify(run.experiment.worker);
      run.experiment = fresh;
      if (workerChanged) {
        panels.renderWorker(fresh.worker);
        charts.teacherFromWorker(fresh);
      }
      let changed = false;
      for (const stage of fresh.stages || []) changed = stages.take(stage) || changed;
      if (changed) stagesChanged();
      panels.renderCheckpoints();
      header.schedule();
    } catch { /* the stream keeps the status; the figures wait for the next try */ }
  }

  // --- start: the details, the history, then the stream ------------------------------------

  (async () => {
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
    lastDetailsFetch = Date.now();
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
    stream = openStream(streamUrl.experiment(id),
      {status: onStatus, metric: onMetric, eval: onEval, stage: onStage, end: onEnd},
      {lastEventId: cursor});
  })();

  const ticker = setInterval(() => {
    if (run.experiment && run.experiment.status === 'running') header.schedule();
  }, 1000);

  return () => {
    run.stopped = true;
    clearInterval(ticker);
    if (stream) stream.close();
    charts.destroy();
  };
}

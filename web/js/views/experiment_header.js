// views/experiment_header.js — the top of an experiment's page: its title and status, where
// it stands (epoch, stage, step, times, its Slurm job), the dataset and teacher lines, the
// Cancel button and the organising controls (../organise.js: name, tags, note, archive,
// delete), its figures, the stages strip and the error line. Redrawn at most once per
// animation frame, from the page's state (experiment.js) as the stream updates it.

import {api} from '../api.js';
import {organiseControls} from '../organise.js';
import {datasetLine} from './experiment_panels.js';
import {h, clear, confirmButton, formatAgo, formatCount, formatDuration, formatNumber, formatPercent, runSeconds,
  statusBadge, ACTIVE} from '../dom.js';

export class RunHeader {
  // run: the page's state ({id, experiment, teacher, live, stopped}); stages: its
  // StageStarts; charts: its RunCharts (the teacher's values, the waiting line).
  constructor({run, stages, charts}) {
    Object.assign(this, {run, stages, charts});
    const id = run.id;
    this.queued = false;
    this.shownTitle = null;
    this.title = h('h1');
    this.meta = h('p', {class: 'meta'});
    this.teacherLine = h('p', {class: 'meta teacher-line', hidden: true});
    this.datasetView = h('p', {class: 'meta dataset-line', hidden: true});
    // Made once: the header is redrawn every frame while the run reports, and an armed button
    // must survive that.
    this.cancelButton = confirmButton('Cancel', 'Really cancel?',
      () => api.cancel(id).catch((e) => this.showError(e.message)), {class: 'danger', dataset: {action: 'cancel'}});
    this.organise = organiseControls({patch: (changes) => api.patchExperiment(id, changes),
      remove: () => api.deleteExperiment(id), done: () => { location.hash = '#/experiments'; },
      onChanged: (changed) => {
        run.experiment = {...run.experiment, ...changed};
        this.shownTitle = null;
        this.schedule();
      },
      onError: (message) => this.showError(message)});
    this.header = h('div', {class: 'run-header'}, this.title, this.meta, this.datasetView, this.teacherLine,
      this.organise.shown, h('div', {class: 'actions'}, this.cancelButton, this.organise.buttons), this.organise.panel);
    this.figures = h('div', {class: 'figures'});
    this.stagesStrip = h('div', {class: 'stages', hidden: true});
    this.errorBox = h('p', {class: 'error', hidden: true});
  }

  // Its parts, in page order.
  get elements() {
    return [this.header, this.figures, this.stagesStrip, this.errorBox];
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => this.render());
  }

  render() {
    this.queued = false;
    const e = this.run.experiment;
    if (!e) return;
    this.cancelButton.hidden = !ACTIVE.has(e.status);
    if (this.shownTitle !== `${e.name} ${e.status}`) {
      clear(this.title, h('span', {class: 'muted'}, `#${this.run.id} `), e.name || '(unnamed)', ' ',
        statusBadge(e.status));
      this.shownTitle = `${e.name} ${e.status}`;
    }
    this.meta.textContent = this.whereItStands(e);
    this.organise.update(e);
    this.renderDataset();
    this.renderTeacher();
    this.charts.setWaiting(ACTIVE.has(e.status));
    this.renderFigures(e);
    if (e.error) this.showError(e.error);
    this.renderStages();
  }

  // "epoch 3/10 · stage 2/2 distill · step 1,200 · created 5 min ago · ran 2 min"
  whereItStands(e) {
    const progress = {...(e.progress || {})};
    const live = this.run.live;
    if (live.step != null && live.step >= (progress.step || 0)) Object.assign(progress, live);
    const count = this.stages.count();
    const parts = [];
    if (progress.epoch) parts.push(`epoch ${progress.epoch}/${progress.epochs ?? '?'}`);
    if (count > 1 && progress.stage != null) {
      parts.push(`stage ${progress.stage + 1}/${count} ${this.stages.name(progress.stage)}`);
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
    return parts.join(' · ');
  }

  renderFigures(e) {
    const s = e.summary || {};
    const figure = (label, value, kind) => h('div', {class: 'figure', dataset: {figure: kind}},
      h('span', {class: 'value'}, value), h('span', {class: 'label'}, label));
    const teacherAccuracy = this.charts.teacherValues.get('teacher/test/accuracy');
    clear(this.figures,
      e.summary ? [
        figure('final test accuracy', formatPercent(s.final_test_accuracy, 2), 'test'),
        figure(`best val accuracy${s.best_val_epoch ? ` (epoch ${s.best_val_epoch})` : ''}`,
          formatPercent(s.best_val_accuracy, 2), 'val'),
        figure('final test loss', formatNumber(s.final_test_loss), 'loss'),
        figure('examples/s', s.examples_per_s ? formatCount(Math.round(s.examples_per_s)) : '—', 'speed')] : null,
      teacherAccuracy != null ? figure(`teacher's test accuracy${e.teacher ? ` (#${e.teacher})` : ''}`,
        formatPercent(teacherAccuracy, 2), 'teacher') : null);
    this.figures.hidden = !this.figures.childElementCount;
  }

  renderDataset() {
    const experiment = this.run.experiment;
    const key = `${experiment.dataset} ${experiment.dataset_checksum}`;
    if (this.datasetView.dataset.shown === key) return;
    this.datasetView.dataset.shown = key;
    const line = datasetLine(experiment);
    this.datasetView.hidden = !line;
    clear(this.datasetView, line);
  }

  // "learns from #3 teacher-cnn (succeeded)", or a checkpoint file; while the run waits for
  // its teacher to finish, it says so.
  renderTeacher() {
    const {experiment: e, teacher} = this.run;
    const line = this.teacherLine;
    const fromCheckpoint = e.config && e.config.teacher && e.config.teacher.checkpoint;
    line.hidden = !e.teacher && !fromCheckpoint;
    if (line.hidden) return;
    const key = `${e.status} ${teacher ? `${teacher.name} ${teacher.status}` : ''}`;
    if (line.dataset.shown === key) return;
    line.dataset.shown = key;
    if (!e.teacher) {
      clear(line, 'learns from the checkpoint ', h('code', {}, fromCheckpoint));
      return;
    }
    const waitingFor = e.status === 'queued' && (!teacher || teacher.status !== 'succeeded');
    clear(line, waitingFor ? 'waiting for its teacher ' : 'learns from ',
      h('a', {href: `#/experiments/${e.teacher}`, class: 'teacher-link'}, `#${e.teacher}`,
        teacher && teacher.name ? ` ${teacher.name}` : ''),
      teacher ? [' ', statusBadge(teacher.status)] : null,
      waitingFor ? ' to finish' : null);
  }

  // The teacher experiment's row (its name and status), for the teacher line.
  async fetchTeacher() {
    const run = this.run;
    if (!run.experiment || !run.experiment.teacher) return;
    try {
      const row = await api.experiment(run.experiment.teacher);
      if (run.stopped) return;
      run.teacher = {name: row.name, status: row.status};
      this.schedule();
    } catch { /* the line keeps the id, which is what matters */ }
  }

  renderStages() {
    const stages = this.stages;
    const planned = stages.planned();
    const count = stages.count();
    this.stagesStrip.hidden = count < 2;
    if (count < 2) return;
    const current = this.run.live.stage ?? (this.run.experiment.progress || {}).stage;
    let epoch = 1;
    clear(this.stagesStrip, h('span', {class: 'label'}, 'Stages'), Array.from({length: count}, (_, i) => {
      const first = (stages.get(i) || {}).epoch || epoch;
      const epochs = (planned[i] || {}).epochs;
      epoch = first + (epochs || 0);
      const start = stages.get(i);
      return [i > 0 ? h('span', {class: 'arrow'}, '→') : null,
        h('span', {class: `stage${current === i ? ' current' : ''}`, dataset: {stage: i}},
          h('b', {}, stages.name(i)), epochs ? ` epochs ${first}–${first + epochs - 1}` : '',
          start != null ? ` · from step ${formatCount(start.step)}` : '')];
    }));
  }

  showError(message) {
    this.errorBox.textContent = message || '';
    this.errorBox.hidden = !message;
  }
}

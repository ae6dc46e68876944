// views/experiment_stages.js — where each stage of an experiment began, for its page: the
// header's stages strip and the charts' stage markers both read them from here.
//
// Stage boundaries come from the daemon: the details' `stages` (where each began) and the
// stream's `stage` events for the ones that begin later. A run recorded before the daemon
// kept stage starts has none; for it they are worked out as before, from the config's epochs
// per stage and the steps at which the evaluations say each epoch ended.

export class StageStarts {
  // run: the page's state ({experiment, …}); the planned stages are read from its config.
  constructor(run) {
    this.run = run;
    this.starts = new Map(); // stage index → {step: its first step, epoch: its first epoch, name}
    this.from = null; // 'daemon' once it named a stage start; 'derived' for an older run
    this.lastStage = null; // the stage of the newest metric seen (derived starts only)
  }

  planned() {
    const experiment = this.run.experiment;
    return (experiment && experiment.config && experiment.config.stages) || [];
  }

  count() {
    return Math.max(this.planned().length, (this.run.experiment.progress || {}).stages || 0, this.starts.size);
  }

  name(i) {
    return (this.starts.get(i) || {}).name || (this.planned()[i] || {}).name || `stage ${i + 1}`;
  }

  get(i) {
    return this.starts.get(i);
  }

  // A stage start as the daemon says it ({stage, name, epoch, step}, step being the steps
  // done before it). Returns whether anything changed.
  take({stage, name, epoch, step}) {
    if (this.from !== 'daemon') {
      this.starts.clear(); // what was worked out gives way to what the daemon recorded
      this.from = 'daemon';
    }
    const known = this.starts.get(stage);
    if (known && known.step === step + 1 && known.name === name && known.epoch === epoch) return false;
    this.starts.set(stage, {step: step + 1, epoch, name});
    return true;
  }

  // A metric event of a run without recorded stage starts: a change of stage marks a
  // boundary. Returns whether the markers changed.
  takeMetric(event) {
    let changed = false;
    if (this.from !== 'daemon' && !this.starts.has(event.stage)
      && (this.lastStage === null || event.stage !== this.lastStage)) {
      this.from = 'derived';
      this.starts.set(event.stage, {step: event.step, epoch: event.epoch, name: this.name(event.stage)});
      changed = this.lastStage !== null;
    }
    this.lastStage = event.stage;
    return changed;
  }

  // For a run whose stage starts the daemon did not record (one from before it did): from
  // the stored curves, and the last step they hold.
  derive(curves, lastStep) {
    if (this.from === 'daemon') return;
    const stages = this.planned();
    if (lastStep <= 0) return;
    this.from = 'derived';
    this.starts.set(0, {step: 1, epoch: 1, name: this.name(0)});
    this.lastStage = 0;
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
      this.starts.set(k, {step: end + 1, epoch: epochs + 1, name: this.name(k)});
      this.lastStage = k;
    }
  }

  sorted() {
    return [...this.starts].sort((a, b) => a[0] - b[0]);
  }

  // The charts' markers ({x, label, line}): on the step charts where each stage began…
  stepMarkers() {
    if (this.count() < 2) return [];
    return this.sorted().map(([stage, start]) => ({x: start.step, label: this.name(stage), line: stage > 0}));
  }

  // …and on the epoch charts, between the last epoch of one stage and the first of the next.
  epochMarkers() {
    if (this.count() < 2) return [];
    return this.sorted().filter(([, start]) => start.epoch != null)
      .map(([stage, start]) => ({x: stage === 0 ? start.epoch : start.epoch - 0.5, label: this.name(stage),
        line: stage > 0}));
  }
}

// views/experiment_panels.js — the experiment page's panels that show what the API says as
// it is: the checkpoints (newest first, where a run resumes, each downloadable as the file
// and as safetensors), the dataset line of the header, the worker's start report, and
// RunPanels, the folding panels under the charts (checkpoints, log, config, worker) that
// hold them. The functions are pure functions of the run: the page calls them again when
// it changes.

import {h, clear, formatBytes, formatCount, formatTime, ACTIVE} from '../dom.js';
import {api, downloadUrl} from '../api.js';

// "trained on fashion-mnist · 3f2a9c01b7de": the dataset (a link to its page) and the first
// 12 hex digits of the checksum recorded at submission, the whole one in the title. Null for
// a run that records none. Synthetic data is generated, not registered: no page to link.
export function datasetLine(experiment) {
  const name = experiment.dataset;
  if (!name) return null;
  const checksum = experiment.dataset_checksum;
  return ['trained on ', name === 'synthetic' ? h('span', {class: 'dataset-name'}, name)
    : h('a', {href: `#/datasets/${encodeURIComponent(name)}`, class: 'dataset-link'}, name),
    checksum ? [' · ', h('code', {class: 'dataset-checksum', title: `SHA-256 ${checksum}`}, checksum.slice(0, 12))]
      : null];
}

// The checkpoints table, or a sentence saying why there is none (yet).
export function checkpointsPanel(experiment) {
  const list = experiment.checkpoints || [];
  if (!list.length) {
    const every = experiment.config && experiment.config.checkpoint_every;
    const when = every ? `every ${every === 1 ? 'epoch' : `${every} epochs`} and at the end` : 'at the end';
    const text = !experiment.started_at ? (ACTIVE.has(experiment.status) ? 'None yet: the run has not started.'
      : 'None: the run never started.')
      : ACTIVE.has(experiment.status) ? `None yet: this run writes one ${when}.` : 'This run left no checkpoint.';
    return h('p', {class: 'empty-note'}, text);
  }
  const rows = [...list].sort((a, b) => b.epoch - a.epoch); // newest first: where a run resumes
  return h('div', {class: 'table-wrap checkpoints-wrap'}, h('table', {class: 'checkpoints'},
    h('thead', {}, h('tr', {}, h('th', {class: 'num'}, 'epoch'), h('th', {class: 'num'}, 'step'),
      h('th', {class: 'num'}, 'size'), h('th', {}, 'written'), h('th', {}, 'path'), h('th', {}, 'download'))),
    h('tbody', {}, rows.map((c, i) => h('tr', {dataset: {epoch: c.epoch}},
      h('td', {class: 'num', dataset: {label: 'epoch'}}, String(c.epoch),
        i === 0 && rows.length > 1 ? h('span', {class: 'muted'}, ' newest') : null),
      h('td', {class: 'num', dataset: {label: 'step'}}, formatCount(c.step)),
      h('td', {class: 'num', title: `${formatCount(c.bytes)} bytes`}, formatBytes(c.bytes)),
      h('td', {class: 'time', title: c.created_at || ''}, formatTime(c.created_at)),
      h('td', {class: 'path'}, h('code', {}, c.path)),
      h('td', {class: 'downloads'},
        h('a', {href: downloadUrl.checkpoint(experiment.id, c.epoch), download: '', class: 'download-checkpoint',
          'aria-label': `checkpoint file of epoch ${c.epoch}`}, 'checkpoint'), ' ',
        h('a', {href: downloadUrl.safetensors(experiment.id, c.epoch), download: '', class: 'download-safetensors',
          'aria-label': `weights of epoch ${c.epoch} as safetensors`}, 'safetensors')))))));
}

// What the worker reported when it started (pid, host, threads, parameter counts…), flat.
export function workerPanel(worker) {
  if (!worker) return h('dd', {}, 'No worker has started this run yet.');
  const flat = (object, prefix) => Object.entries(object).flatMap(([key, value]) =>
    value && typeof value === 'object' && !Array.isArray(value) ? flat(value, `${prefix}${key}.`)
      : [[`${prefix}${key}`, value]]);
  return flat(worker, '').map(([key, value]) => [h('dt', {}, key),
    h('dd', {}, typeof value === 'number' ? formatCount(value) : String(value))]);
}

// The panels under the charts: the checkpoints, the run's log (Refresh), its config (Edit as
// new: a draft for the submit page) and the worker's report.
export class RunPanels {
  // run: the page's state ({id, experiment, stopped}).
  constructor(run) {
    this.run = run;
    this.shownCheckpoints = null;
    this.checkpointsCount = h('span', {class: 'muted count'});
    this.checkpointsView = h('div', {class: 'checkpoints'});
    this.logView = h('pre', {class: 'log'}, '…');
    this.configView = h('pre', {class: 'config'});
    this.workerView = h('dl', {class: 'worker'});
    this.elements = [
      h('details', {class: 'panel', open: true, dataset: {panel: 'checkpoints'}},
        h('summary', {}, 'Checkpoints ', this.checkpointsCount), this.checkpointsView),
      h('details', {class: 'panel', open: true}, h('summary', {}, 'Log ',
        h('button', {type: 'button', class: 'secondary small', onclick: () => this.fetchLog(true)}, 'Refresh')),
      this.logView),
      h('details', {class: 'panel'}, h('summary', {}, 'Config ',
        h('button', {type: 'button', class: 'secondary small', onclick: (event) => this.editAsNew(event)},
          'Edit as new')), this.configView),
      h('details', {class: 'panel'}, h('summary', {}, 'Worker'), this.workerView)];
  }

  renderCheckpoints() {
    const experiment = this.run.experiment;
    const list = experiment.checkpoints || [];
    const key = `${experiment.status} ${JSON.stringify(list)}`;
    if (key === this.shownCheckpoints) return;
    this.shownCheckpoints = key;
    this.checkpointsCount.textContent = list.length ? `(${list.length})` : '';
    clear(this.checkpointsView, checkpointsPanel(experiment));
  }

  renderConfig() {
    this.configView.textContent = JSON.stringify(this.run.experiment.config, null, 2);
  }

  renderWorker(worker) {
    clear(this.workerView, workerPanel(worker));
  }

  // force: scroll to the end even if the reader had scrolled up.
  async fetchLog(force) {
    const logView = this.logView;
    try {
      const text = await api.log(this.run.id);
      if (this.run.stopped) return;
      const atBottom = logView.scrollTop + logView.clientHeight >= logView.scrollHeight - 4;
      logView.textContent = text || '(nothing logged yet)';
      if (atBottom || force) logView.scrollTop = logView.scrollHeight;
    } catch (e) {
      logView.textContent = `could not read the log: ${e.message}`;
    }
  }

  editAsNew(event) {
    event.preventDefault(); // the button sits in a <summary>
    const config = {...this.run.experiment.config};
    try {
      sessionStorage.setItem('mapsage.draft', JSON.stringify(config, null, 2));
    } catch { /* the submit page then starts from a template */ }
    location.hash = '#/submit';
  }
}

// views/studies.js — the studies page (#/studies, #/studies?archived=1): every study, newest
// first, with its status, its tags, how many of its runs are done (a bar in the colours of
// their outcomes), and when it was created and ran; archived ones on demand.
//
// Live without a stream per study: the page follows /api/events, the one stream of every
// experiment, and lists the studies again (at most every two seconds) when one of the
// experiments changes status while a listed study is still going, or when a new experiment
// appears queued (a study just submitted). An epoch ending changes nothing here and costs
// nothing.

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {h, append, clear, formatAgo, formatCount, formatDuration, runSeconds, statusBadge} from '../dom.js';

const PAGE = 100;
const RELOAD_GAP_MS = 2000;
export const ENDED = ['succeeded', 'failed', 'cancelled'];

// "7 of 10 done" and a bar with a segment per outcome (succeeded, failed, cancelled), then
// the running ones; the text says what the colours say.
export function runsProgress(study) {
  const counts = study.counts || {};
  const total = study.runs || 0;
  const done = ENDED.reduce((sum, status) => sum + (counts[status] || 0), 0);
  const parts = [];
  for (const status of ['running', 'queued', 'interrupted', 'failed', 'cancelled']) {
    if (counts[status]) parts.push(`${formatCount(counts[status])} ${status}`);
  }
  const segment = (status) => (counts[status] && total
    ? h('span', {class: `segment segment-${status}`, style: `width:${((counts[status] / total) * 100).toFixed(2)}%`})
    : null);
  return h('div', {class: 'runs-progress', dataset: {done: String(done), total: String(total)}},
    h('span', {class: 'progress-text'}, `${formatCount(done)}/${formatCount(total)} done`,
      parts.length ? h('span', {class: 'muted'}, ` · ${parts.join(' · ')}`) : null),
    h('span', {class: 'bar stacked', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(total),
      'aria-valuenow': String(done), 'aria-label': `${done} of ${total} runs done`},
    ['succeeded', 'failed', 'cancelled', 'running'].map(segment)));
}

export function mount(root, {query}) {
  document.title = 'Studies · MapSage';
  let archived = query.get('archived') || '';
  const statuses = new Map(); // experiment id → the status last seen, to tell a change from progress
  let studies = [];
  let nextBefore = null;
  let reloadTimer = null;
  let lastLoad = 0;
  let stopped = false;

  const tbody = h('tbody');
  const empty = h('p', {class: 'empty', hidden: true});
  const error = h('p', {class: 'error', hidden: true});
  const more = h('button', {type: 'button', class: 'secondary', hidden: true, onclick: () => load(nextBefore)},
    'Load older');
  const archivedSelect = h('select', {name: 'archived', 'aria-label': 'archived', onchange: () => {
    archived = archivedSelect.value;
    history.replaceState(null, '', `#/studies${archived ? `?archived=${archived}` : ''}`);
    load(null);
  }}, h('option', {value: ''}, 'not archived'), h('option', {value: '1'}, 'archived'), h('option', {value: 'all'},
    'archived or not'));
  archivedSelect.value = archived;
  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Studies'), h('div', {class: 'filters'}, archivedSelect)),
    error,
    h('div', {class: 'table-wrap'}, h('table', {class: 'studies'},
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'id'), h('th', {scope: 'col'}, 'name'),
        h('th', {scope: 'col'}, 'status'), h('th', {scope: 'col'}, 'runs'), h('th', {scope: 'col'}, 'created'),
        h('th', {scope: 'col'}, 'duration'))),
      tbody)),
    empty, more);

  function row(study) {
    const link = (text) => h('a', {href: `#/studies/${study.id}`}, text);
    return h('tr', {dataset: {id: String(study.id), status: study.status}},
      h('td', {class: 'id'}, link(`#${study.id}`)),
      h('td', {class: 'name'}, link(study.name || '(unnamed)'),
        (study.tags || []).length ? h('span', {class: 'tags'}, study.tags.map((t) => h('span', {class: 'tag'}, t)))
          : null,
        study.archived_at ? h('span', {class: 'tag archived'}, 'archived') : null,
        study.description ? h('div', {class: 'description muted'}, study.description) : null,
        study.error ? h('div', {class: 'row-error', title: study.error}, study.error) : null),
      h('td', {class: 'status-cell'}, statusBadge(study.status)),
      h('td', {class: 'progress'}, runsProgress(study)),
      h('td', {class: 'age', dataset: {label: 'created'}, title: study.created_at || ''}, formatAgo(study.created_at)),
      h('td', {class: 'duration', dataset: {label: 'ran'}}, formatDuration(runSeconds(study))));
  }

  function render() {
    clear(tbody, studies.map(row));
    empty.hidden = studies.length > 0;
    clear(empty, 'No studies yet. A study is submitted as JSON to ', h('code', {}, 'POST /api/studies'), '.');
    more.hidden = nextBefore == null;
  }

  // before = null: the first page again (what is shown is replaced, so a reload while more
  // pages are open keeps only the first; that is what changes anyway).
  async function load(before = null) {
    lastLoad = Date.now();
    try {
      const page = await api.studies({limit: PAGE, before, archived});
      if (stopped) return;
      studies = before ? [...studies, ...page.studies] : page.studies;
      nextBefore = page.next_before;
      error.hidden = true;
      render();
    } catch (e) {
      error.textContent = `Could not list the studies: ${e.message}`;
      error.hidden = false;
    }
  }

  function reloadSoon() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = null;
      load(null);
    }, Math.max(0, lastLoad + RELOAD_GAP_MS - Date.now()));
  }

  function onExperiment(experiment) {
    const before = statuses.get(experiment.id);
    statuses.set(experiment.id, experiment.status);
    if (before === experiment.status) return; // an epoch, not a change of state
    // First seen queued: perhaps a study just submitted. Otherwise only a study still going
    // can have changed (a run seen first as running has started since the list was read).
    const going = studies.some((study) => !ENDED.includes(study.status));
    if (going || (before === undefined && experiment.status === 'queued')) reloadSoon();
  }

  const stream = openStream(streamUrl.events(), {experiment: onExperiment}, {onReopen: () => load(null)});
  load(null);

  // Ages and running durations move with the clock.
  const ticker = setInterval(() => {
    for (const tr of tbody.children) {
      const study = studies.find((s) => String(s.id) === tr.dataset.id);
      if (!study) continue;
      tr.querySelector('td.age').textContent = formatAgo(study.created_at);
      if (!ENDED.includes(study.status)) tr.querySelector('td.duration').textContent = formatDuration(runSeconds(study));
    }
  }, 1000);

  return () => {
    stopped = true;
    clearInterval(ticker);
    clearTimeout(reloadTimer);
    stream.close();
  };
}

// views/experiments.js — the experiments page (#/experiments): every experiment, newest first
// or sorted by any column (click its heading), with status, teacher, progress, age, duration,
// key figures, tags and chosen config values as columns; filters by status, name, tag, a
// config condition (optimizer.lr>0.01) and archive; cancel, archive, delete, and pick runs
// to compare. A run that waits for its teacher to finish says which.
// Follows /api/events: each `experiment` event carries the row as the list shows it, so a row
// is replaced in place, never refetched.
//
// The global stream is live only, so the page listens and lists at the same time and keeps,
// for each experiment, whichever of the two is fresher (see fresher()): nothing that
// happens between the list and the first event is lost, and an event that overtakes the
// list is not undone by it.

import {api, streamUrl} from '../api.js';
import {openStream} from '../stream.js';
import {h, append, clear, confirmButton, formatAgo, formatDuration, formatPercent, runSeconds, statusBadge, STATUSES,
  ACTIVE} from '../dom.js';

const PAGE = 100;

// Whether row `a` is newer than row `b` of the same experiment: a later attempt, then a
// later state (queued < running < ended), then more steps.
function fresher(a, b) {
  const rank = (e) => (e.status === 'running' ? 1 : ACTIVE.has(e.status) ? 0 : 2);
  const key = (e) => [e.attempts || 0, rank(e), (e.progress && e.progress.step) || 0];
  const [ka, kb] = [key(a), key(b)];
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] > kb[i];
  return false;
}

export function mount(root, {query}) {
  document.title = 'Experiments · MapSage';
  const state = {
    status: query.get('status') || '',
    name: query.get('name') || '',
    tag: query.get('tag') || '',
    where: query.get('where') || '',
    archived: query.get('archived') || '',
    columns: query.get('columns') || '',
    sort: query.get('sort') || '',
    order: query.get('order') || '',
    nextOffset: null,
    rows: new Map(), // id → {experiment, tr, cells, cancel}
    known: new Map(), // id → {name, status} of every experiment seen, shown or not: the teachers
    asked: new Set(), // teachers looked up once because neither the list nor the stream had them
    selected: new Set(),
    nextBefore: null,
  };

  const statusSelect = h('select', {name: 'status', 'aria-label': 'status', onchange: () => {
    state.status = statusSelect.value;
    reload();
  }}, h('option', {value: ''}, 'all statuses'), STATUSES.map((s) => h('option', {value: s}, s)));
  statusSelect.value = state.status;
  let typing = null;
  const nameInput = h('input', {type: 'search', name: 'name', placeholder: 'filter by name', value: state.name,
    'aria-label': 'name', oninput: () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.name = nameInput.value.trim();
        reload();
      }, 200);
    }});
  const field = (name, placeholder, label, width) => {
    const input = h('input', {type: 'search', name, placeholder, value: state[name], 'aria-label': label,
      size: width, onchange: () => {
        state[name] = input.value.trim();
        reload();
      }});
    return input;
  };
  const tagInput = field('tag', 'tag', 'tag', 8);
  const whereInput = field('where', 'optimizer.lr>0.01', 'where: config conditions', 18);
  const columnsInput = field('columns', 'columns: optimizer.lr,…', 'extra columns', 18);
  const archivedSelect = h('select', {name: 'archived', 'aria-label': 'archived', onchange: () => {
    state.archived = archivedSelect.value;
    reload();
  }}, h('option', {value: ''}, 'not archived'), h('option', {value: '1'}, 'archived'), h('option', {value: 'all'},
    'archived or not'));
  archivedSelect.value = state.archived;
  const compareButton = h('button', {type: 'button', class: 'secondary', disabled: true, onclick: () => {
    location.hash = `#/compare?ids=${[...state.selected].sort((a, b) => a - b).join(',')}`;
  }}, 'Compare selected');
  const tbody = h('tbody');
  const headRow = h('tr');
  const empty = h('p', {class: 'empty', hidden: true});
  const more = h('button', {type: 'button', class: 'secondary', hidden: true,
    onclick: () => (state.nextBefore != null ? load(state.nextBefore) : load(null, state.nextOffset))},
    'Load older');
  const error = h('p', {class: 'error', hidden: true});

  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Experiments'), h('div', {class: 'filters'}, statusSelect, nameInput,
      tagInput, whereInput, archivedSelect, columnsInput, compareButton),
    h('a', {class: 'button', href: '#/submit'}, 'New experiment')),
    error,
    h('div', {class: 'table-wrap'}, h('table', {class: 'experiments'}, h('thead', {}, headRow), tbody)),
    empty, more);

  // A heading sorts by its column: up, then down, then back to newest first.
  function renderHead() {
    const extra = extraColumns();
    const heading = (label, key) => {
      if (!key) return h('th', {}, label);
      const active = state.sort === key;
      const direction = active ? (state.order || 'asc') : null;
      return h('th', {'aria-sort': active ? (direction === 'asc' ? 'ascending' : 'descending') : 'none',
        dataset: {sort: key}},
      h('button', {type: 'button', class: 'sort', onclick: () => {
        if (!active) [state.sort, state.order] = [key, 'asc'];
        else if (direction === 'asc') state.order = 'desc';
        else [state.sort, state.order] = ['', ''];
        renderHead();
        reload();
      }}, label, h('span', {class: 'sort-mark', 'aria-hidden': 'true'}, active ? (direction === 'asc' ? ' ▲' : ' ▼')
        : '')));
    };
    headRow.replaceChildren(h('th', {class: 'pick'}, ''), heading('id', 'id'), heading('name', 'name'),
      heading('teacher', 'teacher'), heading('status', 'status'), heading('progress', 'progress'),
      heading('age', 'created_at'), heading('duration', 'duration'),
      heading('test acc.', 'summary.final_test_accuracy'), heading('best val', 'summary.best_val_accuracy'),
      ...extra.map((column) => heading(column, column)), h('th', {}, ''));
  }

  function extraColumns() {
    return state.columns.split(',').map((c) => c.trim()).filter(Boolean);
  }

  // What the page can tell of a row by itself (a `where` condition it cannot: the server
  // decides which rows are listed, and a live event only updates those).
  function matches(experiment) {
    if (state.status && !state.status.split(',').includes(experiment.status)) return false;
    const archived = experiment.archived_at != null;
    if ((state.archived === '' && archived) || (state.archived === '1' && !archived)) return false;
    const tags = experiment.tags || [];
    if (state.tag && !state.tag.split(',').some((t) => tags.includes(t))) return false;
    return !state.name || (experiment.name || '').toLowerCase().includes(state.name.toLowerCase());
  }

  // Whether a row the list did not have may be put in by a live event: only in the default
  // order (newest first) and without conditions the page cannot check.
  const liveInserts = () => !state.sort && !state.where;

  function updateUrl() {
    const search = new URLSearchParams();
    for (const key of ['status', 'name', 'tag', 'where', 'archived', 'columns', 'sort', 'order']) {
      if (state[key]) search.set(key, state[key]);
    }
    const text = search.toString();
    history.replaceState(null, '', `#/experiments${text ? `?${text}` : ''}`);
  }

  // A row's cells are made once and updated in place: a run reports an epoch many times a
  // second, and a checkbox or an armed Cancel button must survive that.
  function makeRow(experiment) {
    const row = {experiment, tr: h('tr'), cancel: null, shownStatus: null};
    const check = h('input', {type: 'checkbox', 'aria-label': `select ${experiment.id}`,
      checked: state.selected.has(experiment.id), onchange: () => {
        if (check.checked) state.selected.add(experiment.id);
        else state.selected.delete(experiment.id);
        compareButton.disabled = state.selected.size < 1;
        compareButton.textContent = state.selected.size ? `Compare ${state.selected.size}` : 'Compare selected';
      }});
    const link = (text) => h('a', {href: `#/experiments/${experiment.id}`}, text);
    row.cells = {
      pick: h('td', {class: 'pick'}, check),
      id: h('td', {class: 'id'}, link(`#${experiment.id}`)),
      name: h('td', {class: 'name'}),
      teacher: h('td', {class: 'teacher', dataset: {label: 'teacher'}}),
      status: h('td', {class: 'status-cell'}),
      progress: h('td', {class: 'progress'}),
      age: h('td', {class: 'age', dataset: {label: 'age'}}),
      duration: h('td', {class: 'duration', dataset: {label: 'ran'}}),
      test: h('td', {class: 'num', dataset: {label: 'test'}}),
      val: h('td', {class: 'num', dataset: {label: 'val'}}),
      extra: extraColumns().map((column) => h('td', {class: 'num extra', dataset: {label: column, column}})),
      actions: h('td', {class: 'actions'}),
    };
    row.archive = h('button', {type: 'button', class: 'secondary small', dataset: {action: 'archive'}, onclick: () =>
      api.patchExperiment(experiment.id, {archived: row.experiment.archived_at == null}).then((changed) => upsert(changed))
        .catch((e) => showError(`archive #${experiment.id}: ${e.message}`))});
    row.remove = confirmButton('Delete', 'Really delete?', () => api.deleteExperiment(experiment.id)
      .then(() => drop(experiment)).catch((e) => showError(`delete #${experiment.id}: ${e.message}`)), {class: 'danger small', dataset: {action: 'delete'}});
    row.cells.actions.append(row.archive, row.remove);
    row.link = link;
    append(row.tr, Object.values(row.cells));
    row.tr.dataset.id = String(experiment.id);
    renderRow(row);
    return row;
  }

  function renderRow(row) {
    const {experiment, cells} = row;
    const p = experiment.progress || {};
    const summary = experiment.summary || {};
    clear(cells.name, row.link(experiment.name || '(unnamed)'),
      (experiment.tags || []).length ? h('span', {class: 'tags'}, experiment.tags.map((t) => h('span', {class: 'tag'}, t)))
        : null,
      experiment.archived_at ? h('span', {class: 'tag archived'}, 'archived') : null,
      experiment.note ? h('div', {class: 'row-note muted', title: experiment.note}, experiment.note.split('\n')[0]) : null,
      experiment.error ? h('div', {class: 'row-error', title: experiment.error}, experiment.error) : null);
    const values = experiment.columns || {};
    cells.extra.forEach((cell) => {
      const value = values[cell.dataset.column];
      cell.textContent = value == null ? '—' : typeof value === 'object' ? JSON.stringify(value) : String(value);
    });
    row.archive.textContent = experiment.archived_at ? 'Unarchive' : 'Archive';
    row.remove.hidden = experiment.status === 'running';
    if (row.shownStatus !== experiment.status) { // a new badge would restart its animation
      clear(cells.status, statusBadge(experiment.status));
      row.shownStatus = experiment.status;
    }
    const teacherId = experiment.teacher;
    const teacher = teacherId ? state.known.get(teacherId) : null;
    if (cells.teacher.dataset.shown !== `${teacherId} ${teacher ? teacher.name : ''}`) {
      cells.teacher.dataset.shown = `${teacherId} ${teacher ? teacher.name : ''}`;
      cells.teacher.classList.toggle('none', !teacherId);
      clear(cells.teacher, teacherId ? h('a', {href: `#/experiments/${teacherId}`, title: teacher && teacher.name
        ? `learns from #${teacherId} ${teacher.name}` : `learns from #${teacherId}`}, `#${teacherId}`) : '—');
    }
    if (teacherId && !teacher) lookUp(teacherId);
    // Queued behind a teacher that has not succeeded yet: the daemon starts it after.
    const waitingFor = experiment.status === 'queued' && teacher && teacher.status !== 'succeeded' ? teacherId : null;
    const progressText = p.epoch
      ? `epoch ${p.epoch}/${p.epochs ?? '?'}${p.stages > 1 ? ` · stage ${p.stage + 1}/${p.stages}` : ''}`
      : (experiment.status === 'queued' ? (waitingFor ? 'waiting for ' : 'waiting') : '—');
    const fraction = p.epochs ? Math.min(1, (p.epoch || 0) / p.epochs) : 0;
    clear(cells.progress, h('span', {class: 'progress-text'}, progressText,
      waitingFor && !p.epoch ? h('a', {href: `#/experiments/${waitingFor}`}, `#${waitingFor}`) : null),
      p.epochs ? h('span', {class: 'bar'}, h('span', {style: `width:${(fraction * 100).toFixed(1)}%`})) : null);
    cells.age.textContent = formatAgo(experiment.created_at);
    cells.duration.textContent = formatDuration(runSeconds(experiment));
    cells.test.textContent = formatPercent(summary.final_test_accuracy);
    cells.val.textContent = formatPercent(summary.best_val_accuracy);
    const active = ACTIVE.has(experiment.status);
    if (active && !row.cancel) {
      row.cancel = confirmButton('Cancel', 'Really cancel?',
        () => api.cancel(experiment.id).catch((e) => showError(`cancel #${experiment.id}: ${e.message}`)),
        {class: 'danger small', dataset: {action: 'cancel'}});
      cells.actions.append(row.cancel);
    } else if (!active && row.cancel) {
      row.cancel.remove();
      row.cancel = null;
    }
    row.tr.dataset.status = experiment.status;
  }

  // Every experiment seen, for the rows that name it as their teacher.
  function remember(experiment) {
    const before = state.known.get(experiment.id);
    if (before && before.status === experiment.status && before.name === experiment.name) return;
    state.known.set(experiment.id, {name: experiment.name, status: experiment.status});
    for (const row of state.rows.values()) if (row.experiment.teacher === experiment.id) renderRow(row);
  }

  // A teacher outside what is listed (filtered out, or on an older page): asked once; the
  // global stream keeps it current from then on.
  function lookUp(id) {
    if (state.asked.has(id)) return;
    state.asked.add(id);
    api.experiment(id).then((experiment) => {
      if (!state.known.has(id)) remember(experiment);
    }).catch(() => {});
  }

  // From an event (live) or from the list (fromList): insert, replace or drop the row.
  function upsert(experiment, fromList = false) {
    const known = state.rows.get(experiment.id);
    if (known && fresher(known.experiment, experiment)) return; // a stale copy
    if (known && !experiment.columns) experiment.columns = known.experiment.columns; // events carry none
    remember(experiment); // shown or not: it may be a teacher
    // Only inside the pages loaded so far: an old run's change must not pull it in alone.
    if (!known && !fromList && state.nextBefore != null && experiment.id < state.nextBefore) return;
    if (!known && !fromList && !liveInserts()) return;
    if (!matches(experiment)) {
      if (known) {
        known.tr.remove();
        state.rows.delete(experiment.id);
        updateEmpty();
      }
      return;
    }
    if (known) {
      const changed = known.experiment.status !== experiment.status;
      known.experiment = experiment;
      renderRow(known);
      if (changed && !fromList) flash(known.tr);
      return;
    }
    const row = makeRow(experiment);
    state.rows.set(experiment.id, row);
    // Newest first: before the first row with a smaller id; sorted, in the server's order.
    const after = fromList && !liveInserts() ? null
      : [...tbody.children].find((tr) => Number(tr.dataset.id) < experiment.id);
    tbody.insertBefore(row.tr, after || null);
    if (!fromList) flash(row.tr);
    updateEmpty();
  }

  function flash(tr) {
    tr.classList.remove('flash');
    void tr.offsetWidth; // restart the animation
    tr.classList.add('flash');
  }

  function updateEmpty() {
    const none = state.rows.size === 0;
    empty.hidden = !none;
    empty.replaceChildren(state.status || state.name || state.tag || state.where || state.archived
      ? 'No experiment matches these filters.'
      : h('span', {}, 'No experiments yet. ', h('a', {href: '#/submit'}, 'Submit one'), '.'));
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  // The first page (before = null: the filters changed, or the stream came back) or the page
  // after `before`.
  async function load(before, offset) {
    if (!before && !offset) {
      tbody.replaceChildren();
      state.rows.clear();
      state.nextBefore = null;
      state.nextOffset = null;
    }
    try {
      const page = await api.experiments({status: state.status, name: state.name, tag: state.tag, where: state.where,
        archived: state.archived, columns: state.columns, sort: state.sort, order: state.order, limit: PAGE, before,
        offset});
      state.nextBefore = page.next_before;
      state.nextOffset = page.next_offset;
      // The teachers on this page first: a student (newer, listed before) then knows its own.
      for (const e of page.experiments) {
        if (!state.known.has(e.id)) state.known.set(e.id, {name: e.name, status: e.status});
      }
      for (const experiment of page.experiments) upsert(experiment, true);
      more.hidden = page.next_offset == null;
      showError('');
      updateEmpty();
    } catch (e) {
      showError(`Could not list the experiments: ${e.message}`);
    }
  }

  function reload() {
    updateUrl();
    return load(null);
  }

  renderHead();
  // Deleted elsewhere (another tab, `mapsage rm`): its row goes.
  function drop({id}) {
    const row = state.rows.get(id);
    if (!row) return;
    row.tr.remove();
    state.rows.delete(id);
    updateEmpty();
  }

  const stream = openStream(streamUrl.events(), {experiment: (experiment) => upsert(experiment), deleted: drop},
    {onReopen: () => load(null)});
  load(null);

  // Ages and running durations move with the clock.
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const {experiment, cells} of state.rows.values()) {
      cells.age.textContent = formatAgo(experiment.created_at, now);
      if (experiment.status === 'running') cells.duration.textContent = formatDuration(runSeconds(experiment, now));
    }
  }, 1000);

  return () => {
    clearInterval(ticker);
    clearTimeout(typing);
    stream.close();
  };
}

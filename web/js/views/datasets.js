// views/datasets.js — the datasets page (#/datasets): every registered dataset with its
// format, input shape, classes, examples and how many warnings its statistics raised; a
// dataset whose files have not been read yet (Fashion-MNIST until first opened) says so.

import {api} from '../api.js';
import {h, append, clear, formatCount} from '../dom.js';

export function shape(input) {
  return Array.isArray(input) ? input.join('×') : '—';
}

export function mount(root) {
  document.title = 'Datasets · MapSage';
  const tbody = h('tbody');
  const error = h('p', {class: 'error', hidden: true});
  const note = h('p', {class: 'hint'});
  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Datasets')),
    error,
    h('div', {class: 'table-wrap'}, h('table', {class: 'datasets'},
      h('thead', {}, h('tr', {}, ['name', 'format', 'input', 'classes', 'train', 'test', 'warnings']
        .map((label) => h('th', {scope: 'col'}, label)))),
      tbody)),
    note);

  let stopped = false;
  api.datasets().then((answer) => {
    if (stopped) return;
    clear(tbody, answer.datasets.map((dataset) => {
      const warnings = dataset.warnings;
      return h('tr', {dataset: {name: dataset.name}},
        h('td', {class: 'name'}, h('a', {href: `#/datasets/${encodeURIComponent(dataset.name)}`}, dataset.name)),
        h('td', {}, dataset.source ? dataset.source.format : '—'),
        h('td', {}, shape(dataset.input)),
        h('td', {class: 'number'}, dataset.classes == null ? '—' : formatCount(dataset.classes)),
        h('td', {class: 'number'}, dataset.train_size == null ? '—' : formatCount(dataset.train_size)),
        h('td', {class: 'number'}, dataset.test_size == null ? '—' : formatCount(dataset.test_size)),
        h('td', {class: 'warnings-cell'}, warnings == null ? h('span', {class: 'muted'}, 'not read yet')
          : warnings.length ? h('span', {class: 'warning-count'}, `⚠ ${warnings.length}`) : 'none'));
    }));
    clear(note, 'Register a dataset with ', h('code', {}, 'mapsage dataset add NAME FILE…'), ' or ',
      h('code', {}, 'POST /api/datasets'), `; its files go under ${answer.datasets_dir}.`);
  }).catch((failure) => {
    error.hidden = false;
    error.textContent = `Cannot list the datasets: ${failure.message}`;
  });
  return () => { stopped = true; };
}

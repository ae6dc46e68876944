// views/sql.js — the SQL console (#/sql): a read-only query over the whole history through
// POST /api/sql, the result as a table, and a few example queries to start from. The daemon
// refuses anything that writes and limits time and rows; this page only shows what it says.
// The header shows the view only when GET /api/health reports "sql": true.

import {api} from '../api.js';
import {h, append, clear, formatNumber} from '../dom.js';

const EXAMPLES = [
  ['Best runs by final test accuracy',
    `SELECT id, name, status, stage_plan, final_test_accuracy, best_val_accuracy, duration_s
  FROM experiment_summary
 ORDER BY final_test_accuracy DESC NULLS LAST, id DESC
 LIMIT 20`],
  ['Did each loss term fall in each stage?',
    `SELECT experiment_id, stage, stage_name, name, first_step, last_step,
       round(start_value, 4) AS start_value, round(end_value, 4) AS end_value
  FROM stage_summary
 WHERE experiment_id = (SELECT max(id) FROM experiments)
 ORDER BY stage, name`],
  ['Test accuracy per epoch, latest two runs side by side',
    `WITH runs AS (SELECT id FROM experiments ORDER BY id DESC LIMIT 2)
SELECT epoch,
       max(CASE WHEN experiment_id = (SELECT max(id) FROM runs) THEN value END) AS newest,
       max(CASE WHEN experiment_id = (SELECT min(id) FROM runs) THEN value END) AS previous
  FROM evals
 WHERE split = 'test' AND name = 'accuracy' AND experiment_id IN (SELECT id FROM runs)
 GROUP BY epoch ORDER BY epoch`],
  ['Curves of the latest run: points and range',
    `SELECT name, count(*) AS points, min(step) AS first_step, max(step) AS last_step,
       min(value) AS min_value, max(value) AS max_value
  FROM curves
 WHERE experiment_id = (SELECT max(id) FROM experiments)
 GROUP BY name ORDER BY name`],
  ['Experiments per status', `SELECT status, count(*) AS experiments FROM experiments GROUP BY status ORDER BY 2 DESC`],
];

export function mount(root) {
  document.title = 'SQL · MapSage';
  const examples = h('select', {name: 'example', 'aria-label': 'example query', onchange: () => {
    if (examples.value !== '') editor.value = EXAMPLES[Number(examples.value)][1];
  }}, h('option', {value: ''}, 'Example queries…'), EXAMPLES.map(([title], i) => h('option', {value: String(i)}, title)));
  const editor = h('textarea', {name: 'sql', class: 'sql-editor', spellcheck: 'false', rows: 7,
    'aria-label': 'SQL query', value: EXAMPLES[0][1]});
  const runButton = h('button', {type: 'submit'}, 'Run');
  const status = h('p', {class: 'sql-status', role: 'status'});
  const result = h('div', {class: 'table-wrap'});

  append(root,
    h('div', {class: 'toolbar'}, h('h1', {}, 'SQL'), examples),
    h('form', {class: 'sql-form', onsubmit: (event) => {
      event.preventDefault();
      run();
    }}, editor, h('div', {class: 'form-actions'}, runButton,
      h('span', {class: 'hint'}, 'Read-only. Ctrl+Enter runs. Tables and views: experiments, metrics, evals, curves, ',
        'experiment_summary, stage_summary, checkpoints, logs.'))),
    status, result);

  editor.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });

  function cell(value) {
    if (value === null) return h('td', {class: 'null'}, 'NULL');
    if (typeof value === 'number') return h('td', {class: 'number', title: String(value)},
      Number.isInteger(value) ? String(value) : formatNumber(value));
    return h('td', {}, String(value));
  }

  async function run() {
    runButton.disabled = true;
    status.className = 'sql-status';
    status.textContent = 'Running…';
    try {
      const answer = await api.sql(editor.value);
      // A column of numbers (and NULLs) is right-aligned, its header too.
      const numeric = answer.columns.map((c, i) => answer.rows.some((row) => typeof row[i] === 'number') &&
        answer.rows.every((row) => row[i] === null || typeof row[i] === 'number'));
      clear(result, h('table', {class: 'sql-result'},
        h('thead', {}, h('tr', {}, answer.columns.map((c, i) => h('th', {class: numeric[i] ? 'number' : null}, c)))),
        h('tbody', {}, answer.rows.map((row) => h('tr', {}, row.map(cell))))));
      const count = `${answer.rows.length} row${answer.rows.length === 1 ? '' : 's'}`;
      const time = answer.elapsed_ms != null ? ` in ${formatNumber(answer.elapsed_ms)} ms` : '';
      status.textContent = `${count}${time}${answer.truncated ? ` — truncated: ${answer.warning || 'row limit'}` : ''}`;
    } catch (e) {
      status.className = 'sql-status error';
      status.textContent = e.message;
      clear(result);
    } finally {
      runButton.disabled = false;
    }
  }

  run(); // the first example: the page opens on the history at a glance
  return () => {};
}

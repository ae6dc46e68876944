// plots.js — the study page's small static figures: the forest plot (each distilling arm's
// difference from its matched baseline with its interval, against a zero line) in SVG, and
// the grid's heatmap and axis tables as HTML tables (headers a screen reader can follow, text
// that stays sharp at any zoom). Drawn from the numbers they are given, again whenever those
// change; nothing here fetches.

import {h, formatNumber, formatPercent} from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value != null && value !== false) element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// A difference of proportions in percentage points: "+1.2", "−0.4" (a real minus sign).
export function formatPoints(value, digits = 1) {
  if (value == null || !Number.isFinite(value)) return '—';
  const text = Math.abs(value * 100).toFixed(digits);
  if (Number(text) === 0) return (0).toFixed(digits);
  return `${value > 0 ? '+' : '−'}${text}`;
}

// Round steps (1, 2 or 5 × 10^k) that put about `count` ticks across [min, max].
function ticks(min, max, count) {
  const raw = (max - min) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw) || raw;
  const list = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) list.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return list;
}

// rows: [{key, label, detail, mean, low, high, color, significant, matched}] (differences as
// fractions; shown in percentage points). Draws into `host` at its width, and again when
// the width changes; returns a function that stops following the width.
export function forestPlot(host, rows, {axisLabel = 'difference (percentage points)'} = {}) {
  let drawnWidth = 0;
  const draw = () => {
    const width = Math.max(280, Math.floor(host.clientWidth || 600));
    if (width === drawnWidth && host.firstChild) return;
    drawnWidth = width;
    host.replaceChildren(render(width));
  };

  function render(width) {
    const wide = width >= 560;
    const labelWidth = wide ? Math.min(220, Math.round(width * 0.28)) : 0;
    const valueWidth = wide ? 190 : 0;
    const rowHeight = wide ? 30 : 46;
    const top = 8;
    const axisHeight = 44;
    const left = labelWidth + 12;
    const right = width - valueWidth - 12;
    const height = top + rows.length * rowHeight + axisHeight;
    const values = rows.flatMap((r) => [r.mean, r.low, r.high]).filter(Number.isFinite);
    let min = Math.min(0, ...values);
    let max = Math.max(0, ...values);
    if (max - min < 1e-6) [min, max] = [-0.01, 0.01];
    const pad = (max - min) * 0.08;
    min -= pad;
    max += pad;
    const x = (value) => left + ((value - min) / (max - min)) * (right - left);
    const plotBottom = top + rows.length * rowHeight;

    const svg = s('svg', {class: 'forest', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': `Forest plot: ${rows.map((r) => `${r.label}${r.detail ? ` ${r.detail}` : ''} ${formatPoints(r.mean)} ` +
        `points`).join('; ')}`});
    const grid = s('g', {class: 'axis'});
    for (const t of ticks(min, max, wide ? 6 : 4)) {
      const tx = x(t);
      grid.append(s('line', {x1: tx, x2: tx, y1: top, y2: plotBottom, class: 'grid-line'}),
        s('text', {x: tx, y: plotBottom + 16, 'text-anchor': 'middle'}, formatPoints(t, Math.abs(t) < 0.1 ? 1 : 0)));
    }
    grid.append(s('text', {x: (left + right) / 2, y: plotBottom + 36, 'text-anchor': 'middle', class: 'axis-label'},
      axisLabel));
    svg.append(grid);
    // No difference: where a mark's interval crossing the line means "not distinguishable".
    svg.append(s('line', {class: 'zero', x1: x(0), x2: x(0), y1: top - 4, y2: plotBottom + 4}));

    rows.forEach((row, i) => {
      const y0 = top + i * rowHeight;
      const y = wide ? y0 + rowHeight / 2 : y0 + 30;
      const hasInterval = Number.isFinite(row.low) && Number.isFinite(row.high);
      const text = `${formatPoints(row.mean)}${hasInterval ? ` [${formatPoints(row.low)}, ${formatPoints(row.high)}]` : ''}`;
      const state = !row.matched ? 'unmatched' : row.significant ? 'significant' : 'not significant';
      const mark = s('g', {class: `mark${row.significant ? ' significant' : ''}${row.matched ? '' : ' unmatched'}`,
        'data-key': row.key},
      s('title', {}, `${row.label}${row.detail ? ` (${row.detail})` : ''}: ${text} points, ${state}`));
      if (hasInterval) {
        mark.append(s('line', {x1: x(row.low), x2: x(row.high), y1: y, y2: y, stroke: row.color, class: 'interval'}),
          s('line', {x1: x(row.low), x2: x(row.low), y1: y - 5, y2: y + 5, stroke: row.color, class: 'cap'}),
          s('line', {x1: x(row.high), x2: x(row.high), y1: y - 5, y2: y + 5, stroke: row.color, class: 'cap'}));
      }
      if (Number.isFinite(row.mean)) {
        // Significant: a filled diamond; otherwise a hollow circle. The shape says it, not
        // only the colour.
        const cx = x(row.mean);
        mark.append(row.significant && row.matched
          ? s('path', {d: `M${cx} ${y - 7}L${cx + 7} ${y}L${cx} ${y + 7}L${cx - 7} ${y}Z`, fill: row.color,
            stroke: row.color, class: 'point'})
          : s('circle', {cx, cy: y, r: 5, fill: 'var(--panel)', stroke: row.color, 'stroke-width': 2, class: 'point'}));
      }
      const label = `${row.label}${row.detail ? ` · ${row.detail}` : ''}`;
      if (wide) {
        mark.append(s('text', {x: labelWidth, y: y + 4, 'text-anchor': 'end', class: 'label'}, clip(label, 30)),
          s('text', {x: width - valueWidth, y: y + 4, class: 'value'}, text,
            row.matched ? null : s('tspan', {class: 'flag'}, ' unmatched')));
      } else {
        mark.append(s('text', {x: 4, y: y0 + 13, class: 'label'}, clip(label, 34)),
          s('text', {x: width - 4, y: y0 + 13, 'text-anchor': 'end', class: 'value'}, row.matched ? text : 'unmatched'));
      }
      svg.append(mark);
    });
    return svg;
  }

  const resizer = new ResizeObserver(draw);
  resizer.observe(host);
  draw();
  return () => resizer.disconnect();
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// A cell's value of `path` as the tables show it.
export function formatValue(value) {
  if (typeof value === 'number') return formatNumber(value);
  if (value == null) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

const sameValue = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Mean best validation accuracy per cell of a two-axis grid: rows the first axis's values,
// columns the second's; the cell chosen on validation is outlined and says "best".
// valueOf(cell) → {mean, n} for the cell {path: value, …}.
export function heatmap({arm, axes, best}, valueOf) {
  const [rowsAxis, columnsAxis] = axes;
  const cells = rowsAxis.values.map((r) => columnsAxis.values.map((c) =>
    valueOf({[rowsAxis.path]: r.value, [columnsAxis.path]: c.value})));
  const means = cells.flat().map((c) => c && c.mean).filter(Number.isFinite);
  const low = Math.min(...means);
  const high = Math.max(...means);
  const isBest = (r, c) => !!best && sameValue(best.cell[rowsAxis.path], r.value) &&
    sameValue(best.cell[columnsAxis.path], c.value);
  return h('table', {class: 'heatmap', dataset: {arm}},
    h('caption', {}, `${arm}: mean best validation accuracy per cell`),
    h('thead', {}, h('tr', {}, h('th', {scope: 'col', class: 'corner'}, `${rowsAxis.path} ╲ ${columnsAxis.path}`),
      columnsAxis.values.map((c) => h('th', {scope: 'col'}, formatValue(c.value))))),
    h('tbody', {}, rowsAxis.values.map((r, i) => h('tr', {},
      h('th', {scope: 'row'}, formatValue(r.value)),
      columnsAxis.values.map((c, j) => {
        const cell = cells[i][j];
        const mean = cell && cell.mean;
        // Darker is better, relative to the grid's own range.
        const share = Number.isFinite(mean) ? (high > low ? (mean - low) / (high - low) : 1) : null;
        const strength = share == null ? 0 : Math.round(12 + share * 70);
        const chosen = isBest(r, c);
        return h('td', {class: `${chosen ? 'best' : ''}${strength > 55 ? ' strong' : ''}`,
          style: share == null ? null : `--strength:${strength}%`,
          title: `${rowsAxis.path} = ${formatValue(r.value)}, ${columnsAxis.path} = ${formatValue(c.value)}: ` +
            `${formatPercent(mean)} over ${cell ? cell.n : 0} runs${chosen ? ' (best on validation)' : ''}`},
        h('span', {class: 'cell-value'}, formatPercent(mean)),
        h('span', {class: 'cell-n'}, `n=${cell ? cell.n : 0}`),
        chosen ? h('span', {class: 'cell-best'}, 'best') : null);
      })))));
}

// One axis's effect: each value's mean best validation and test accuracy over every run
// that had it (the grid's marginal means), with a bar for validation; the best cell's value
// is marked.
export function axisTable({arm, best}, axis) {
  const means = axis.values.map((v) => v.best_val_accuracy).filter(Number.isFinite);
  const low = Math.min(...means, 1);
  const high = Math.max(...means, 0);
  return h('table', {class: 'axis-effect', dataset: {arm, path: axis.path}},
    h('caption', {}, `${arm}: ${axis.path}`),
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, axis.path), h('th', {scope: 'col', class: 'num'}, 'n'),
      h('th', {scope: 'col', class: 'num'}, 'best val'), h('th', {scope: 'col', class: 'bar-cell'}, ''),
      h('th', {scope: 'col', class: 'num'}, 'test acc.'))),
    h('tbody', {}, axis.values.map((v) => {
      const chosen = !!best && sameValue(best.cell[axis.path], v.value);
      const share = Number.isFinite(v.best_val_accuracy) && high > low
        ? 0.15 + 0.85 * ((v.best_val_accuracy - low) / (high - low)) : Number.isFinite(v.best_val_accuracy) ? 1 : 0;
      return h('tr', {class: chosen ? 'best' : ''},
        h('th', {scope: 'row'}, formatValue(v.value), chosen ? h('span', {class: 'cell-best'}, 'best') : null),
        h('td', {class: 'num'}, String(v.n)),
        h('td', {class: 'num'}, formatPercent(v.best_val_accuracy)),
        h('td', {class: 'bar-cell'}, h('span', {class: 'bar'}, h('span', {style: `width:${(share * 100).toFixed(1)}%`}))),
        h('td', {class: 'num'}, formatPercent(v.test_accuracy)));
    })));
}

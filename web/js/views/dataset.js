// views/dataset.js — one dataset (#/datasets/NAME): what registration measured — shape,
// checksum, class counts per split (bars), per-channel mean and deviation, duplicates — its
// warnings (imbalance, duplicates, test examples copied from training ones) at the top, and
// a grid of sample images per class drawn on canvases from the raw bytes the API sends
// (GET /api/datasets/{name}/samples: channel-major, 1 channel grey, 3 RGB).

import {api} from '../api.js';
import {h, append, clear, formatCount} from '../dom.js';
import {shape} from './datasets.js';

const SCALE = 3; // each image pixel as 3×3 screen pixels: a 28×28 digit is 84 px wide

// One sample as a canvas: grey for one channel, RGB for three, the first channel otherwise.
export function drawSample(base64, channels, height, width) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const canvas = h('canvas', {width: String(width), height: String(height), class: 'sample',
    style: `width:${width * SCALE}px;height:${height * SCALE}px`});
  const context = canvas.getContext('2d');
  const image = context.createImageData(width, height);
  const plane = width * height;
  for (let p = 0; p < plane; p++) {
    const rgb = channels === 3 ? [bytes[p], bytes[plane + p], bytes[2 * plane + p]] : [bytes[p], bytes[p], bytes[p]];
    image.data.set([...rgb, 255], 4 * p);
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

function classBars(statistics, names) {
  const train = statistics.train.class_counts;
  const test = statistics.test.class_counts;
  const most = Math.max(1, ...train, ...test);
  const bar = (count, kind) => h('span', {class: `class-bar ${kind}`},
    h('span', {class: 'fill', style: `width:${((count / most) * 100).toFixed(1)}%`}));
  return h('table', {class: 'class-counts'},
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'class'), h('th', {scope: 'col'}, 'train'), h('th', {scope: 'col'}),
      h('th', {scope: 'col'}, 'test'), h('th', {scope: 'col'}))),
    h('tbody', {}, train.map((count, label) => h('tr', {dataset: {label: String(label)}},
      h('th', {scope: 'row'}, names[label] != null ? `${label} ${names[label]}` : String(label)),
      h('td', {class: 'number'}, formatCount(count)), h('td', {class: 'bar-cell'}, bar(count, 'train')),
      h('td', {class: 'number'}, formatCount(test[label])), h('td', {class: 'bar-cell'}, bar(test[label], 'test'))))));
}

export function mount(root, {params}) {
  const name = decodeURIComponent(params[0]);
  document.title = `${name} · Datasets · MapSage`;
  const body = h('div', {class: 'dataset-body'}, h('p', {class: 'muted'}, 'Reading the dataset…'));
  append(root, h('div', {class: 'toolbar'}, h('h1', {}, name)), body);
  let stopped = false;

  api.dataset(name).then(async (dataset) => {
    if (stopped) return;
    const statistics = dataset.statistics;
    const names = dataset.class_names || [];
    const duplicates = statistics.duplicates;
    const figure = (label, value) => h('div', {class: 'figure'}, h('span', {class: 'muted'}, label), h('strong', {}, value));
    clear(body,
      statistics.warnings.length
        ? h('ul', {class: 'warnings', role: 'list'}, statistics.warnings.map((text) => h('li', {class: 'warning'}, `⚠ ${text}`)))
        : h('p', {class: 'no-warnings muted'}, 'No warnings: classes balanced, no duplicates, no test example copied from training.'),
      h('div', {class: 'figures'},
        figure('format', dataset.source.format), figure('input', shape(dataset.input)),
        figure('classes', formatCount(dataset.classes)), figure('train', formatCount(dataset.train_size)),
        figure('test', formatCount(dataset.test_size)),
        figure('duplicates', `${duplicates.within_train} train · ${duplicates.within_test} test · ${duplicates.across} across`)),
      h('p', {class: 'checksum'}, 'SHA-256 ', h('code', {}, dataset.checksum)),
      h('h2', {}, 'Per channel (training split)'),
      h('table', {class: 'channels'},
        h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'channel'), h('th', {scope: 'col'}, 'mean'),
          h('th', {scope: 'col'}, 'std'))),
        h('tbody', {}, statistics.channel_mean.map((mean, c) => h('tr', {},
          h('th', {scope: 'row'}, String(c)), h('td', {class: 'number'}, mean.toFixed(4)),
          h('td', {class: 'number'}, statistics.channel_std[c].toFixed(4)))))),
      h('h2', {}, 'Examples per class'),
      h('div', {class: 'table-wrap'}, classBars(statistics, names)));
    const samples = await api.datasetSamples(name);
    if (stopped) return;
    append(body, h('h2', {}, 'Samples'),
      h('div', {class: 'sample-grid'}, samples.classes.map((entry) => h('div', {class: 'sample-row', dataset: {label: String(entry.label)}},
        h('span', {class: 'sample-class'}, entry.name != null ? `${entry.label} ${entry.name}` : String(entry.label)),
        entry.images.length ? entry.images.map((image) => drawSample(image, samples.channels, samples.height, samples.width))
          : h('span', {class: 'muted'}, 'no training examples')))));
  }).catch((failure) => {
    if (stopped) return;
    clear(body, h('p', {class: 'error'}, failure.status === 404 ? `No dataset ${name}.` : `Cannot show ${name}: ${failure.message}`));
  });
  return () => { stopped = true; };
}

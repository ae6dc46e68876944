// app.js — the dashboard's entry point: a hash router (#/experiments, #/experiments/7,
// #/studies, #/studies/3, #/compare?ids=1,2, #/submit, #/sql, #/datasets, #/datasets/NAME) that mounts one view at a time
// into <main>, keeping the site static. Each view module exports mount(root, {params, query})
// and returns a function that stops whatever it started (streams, timers, charts).

import {api} from './api.js';
import * as experiments from './views/experiments.js';
import * as experiment from './views/experiment.js';
import * as studies from './views/studies.js';
import * as study from './views/study.js';
import * as compare from './views/compare.js';
import * as submit from './views/submit.js';
import * as sql from './views/sql.js';
import * as datasets from './views/datasets.js';
import * as dataset from './views/dataset.js';

const ROUTES = [
  {pattern: /^\/experiments\/(\d+)$/, view: experiment, nav: 'experiments'},
  {pattern: /^\/(experiments)?$/, view: experiments, nav: 'experiments'},
  {pattern: /^\/studies\/(\d+)$/, view: study, nav: 'studies'},
  {pattern: /^\/studies$/, view: studies, nav: 'studies'},
  {pattern: /^\/compare$/, view: compare, nav: 'compare'},
  {pattern: /^\/submit$/, view: submit, nav: 'submit'},
  {pattern: /^\/sql$/, view: sql, nav: 'sql'},
  {pattern: /^\/datasets\/([A-Za-z0-9_.%-]+)$/, view: dataset, nav: 'datasets'},
  {pattern: /^\/datasets$/, view: datasets, nav: 'datasets'},
];

const main = document.getElementById('view');
let unmount = null;

function route() {
  const [path, search] = (location.hash.replace(/^#/, '') || '/experiments').split('?');
  const query = new URLSearchParams(search || '');
  let match = null;
  const found = ROUTES.find((r) => (match = r.pattern.exec(path)));
  if (unmount) unmount();
  unmount = null;
  const root = document.createElement('div');
  root.className = 'view';
  main.replaceChildren(root);
  for (const link of document.querySelectorAll('nav a')) {
    const active = !!found && link.dataset.view === found.nav;
    link.classList.toggle('active', active);
    // "page" on the exact page, "true" on a section's own page (a study under Studies).
    if (active) link.setAttribute('aria-current', link.getAttribute('href') === `#${path}` ? 'page' : 'true');
    else link.removeAttribute('aria-current');
  }
  if (!found) {
    root.append(Object.assign(document.createElement('h1'), {textContent: 'Not found'}),
      Object.assign(document.createElement('p'), {textContent: `Nothing at #${path}.`}));
    return;
  }
  main.dataset.view = found.nav;
  unmount = found.view.mount(root, {params: match.slice(1), query}) || null;
}

window.addEventListener('hashchange', route);
// Charts take their colours from the theme when drawn: draw again when it changes.
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', route);

// The header's live indicator: a filled dot and "live" while a stream is connected, a hollow
// one and "offline" otherwise (the shape and the word say it, not only the colour).
const indicator = document.getElementById('live');
window.addEventListener('mapsage:live', (event) => {
  const open = event.detail.open > 0;
  indicator.classList.toggle('on', open);
  indicator.dataset.live = open ? 'yes' : 'no';
  indicator.title = open ? 'live: updates arrive as they happen' : 'not connected: what is shown may be out of date';
  indicator.querySelector('.live-text').textContent = open ? 'live' : 'offline';
});

// The SQL console needs POST /api/sql, which a daemon announces in its health.
api.health().then((health) => {
  document.querySelector('nav a[data-view="sql"]').hidden = !health.sql;
  document.getElementById('version').textContent = health.version ? `v${health.version}` : '';
}).catch(() => {});

route();

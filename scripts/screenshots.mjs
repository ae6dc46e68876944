// screenshots.mjs — the pictures in docs/dashboard.md, taken by Debian's headless Chromium
// from a live mapsaged with real runs on Fashion-MNIST: the experiment list (tagged, with a
// config column), the compare page (config diff, figures, overlaid curves) and one run's page.
//
//   scripts/screenshots [BUILD_DIR]      (starts a daemon of its own, then runs this)
//   MAPSAGE_URL=http://127.0.0.1:8787 node scripts/screenshots.mjs   (against a daemon you run)
//
// It submits its runs to the daemon at MAPSAGE_URL and waits for them (a few minutes on two
// cores), then writes docs/images/{experiments,compare,experiment}.png.

import {mkdirSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

const BASE = process.env.MAPSAGE_URL || 'http://127.0.0.1:8787';
const CHROMIUM = process.env.MAPSAGE_CHROMIUM || '/usr/bin/chromium';
const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'images');

const MLP = {layers: [{type: 'linear', out: 128, name: 'fc1'}, {type: 'relu'}, {type: 'linear', out: 10, name: 'fc2'}]};
// A tenth of the training set, four epochs: a minute or so each, and curves worth looking at.
const run = (name, lr, momentum) => ({name, seed: 1, dataset: {name: 'fashion-mnist', val_size: 5000, train_limit: 6000},
  model: MLP, optimizer: {type: 'sgd', lr, momentum}, batch_size: 64, epochs: 4});
const RUNS = [
  {config: run('mlp-lr0.1', 0.1, 0.9), tags: ['sweep', 'lr'], note: 'fastest start; watch for overshoot'},
  {config: run('mlp-lr0.02', 0.02, 0.9), tags: ['sweep', 'lr', 'best'], note: 'the pick of the sweep'},
  {config: run('mlp-lr0.005', 0.005, 0.9), tags: ['sweep', 'lr'], note: ''},
  {config: run('mlp-no-momentum', 0.02, 0), tags: ['ablation'], note: 'momentum 0: slower, as expected'},
];

async function call(method, path, body) {
  const response = await fetch(BASE + path, {method, headers: body ? {'Content-Type': 'application/json'} : {},
    body: body ? JSON.stringify(body) : undefined});
  const answer = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${answer.error}`);
  return answer;
}

async function waitEnded(id) {
  for (;;) {
    const {status} = await call('GET', `/api/experiments/${id}`);
    if (!['queued', 'running', 'interrupted'].includes(status)) return status;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

const ids = [];
for (const {config, tags, note} of RUNS) {
  const {id} = await call('POST', '/api/experiments', config);
  await call('PATCH', `/api/experiments/${id}`, {tags, note});
  ids.push(id);
}
for (const id of ids) console.log(`#${id} ${await waitEnded(id)}`);

mkdirSync(OUT, {recursive: true});
const browser = await chromium.launch({executablePath: CHROMIUM, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run']});
const page = await browser.newPage({viewport: {width: 1280, height: 860}, colorScheme: 'light'});
const settle = async (selector) => {
  await page.locator(selector).first().waitFor();
  await page.waitForTimeout(800); // the charts' first frame, the rows' flash
};

await page.goto(`${BASE}/#/experiments?columns=optimizer.lr,optimizer.momentum&sort=summary.final_test_accuracy&order=desc`);
await settle('table.experiments tbody tr');
await page.screenshot({path: join(OUT, 'experiments.png')});

await page.goto(`${BASE}/#/compare?ids=${ids.join(',')}&metric=val/accuracy&by=epoch`);
await settle('figure[data-kind="compare"] canvas');
await page.screenshot({path: join(OUT, 'compare.png'), fullPage: true});

await page.goto(`${BASE}/#/experiments/${ids[1]}`);
await settle('figure[data-kind="loss"] canvas');
await page.locator('figure[data-kind="loss"] input.smoothing').fill('0.8');
await page.evaluate(() => document.activeElement.blur()); // no focus ring in the picture
await page.waitForTimeout(500);
await page.screenshot({path: join(OUT, 'experiment.png')});
await browser.close();
console.log(`written: ${OUT}/{experiments,compare,experiment}.png`);

// downloads.test.mjs — the experiment page's downloads and dataset line in real headless
// Chromium against a real mapsaged that tests/test_web.py starts for this file (one worker),
// having registered "tiny-rgb". A run trained here on it: the header names the dataset (a
// link to its page) and its checksum's first 12 hex digits; each checkpoint row links its
// file and its weights as safetensors, and a click downloads (Playwright's download event)
// exactly the bytes the API sends.
//
// Run alone: see tests/test_web.py (Browser.test_downloads_in_chromium).

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {BASE, call, openBrowser, go, shot, watch} from './common.mjs';

let browser;
let page;
let run;
let dataset;
const problems = [];

// Polls the API until the run has ended, within a deadline.
async function waitEnded(id, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const {body} = await call('GET', `/api/experiments/${id}`);
    if (['succeeded', 'failed', 'cancelled'].includes(body.status)) return body;
    assert.ok(Date.now() < deadline, `experiment ${id} still ${body.status} after ${seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function apiBytes(path) {
  const response = await fetch(BASE + path);
  assert.equal(response.status, 200, path);
  return Buffer.from(await response.arrayBuffer());
}

before(async () => {
  ({body: dataset} = await call('GET', '/api/datasets/tiny-rgb'));
  assert.match(dataset.checksum, /^[0-9a-f]{64}$/);
  const submitted = await call('POST', '/api/experiments', {name: 'on-tiny-rgb', dataset: {name: 'tiny-rgb'},
    model: {layers: [{type: 'linear', out: 16, name: 'hidden'}, {type: 'relu'}, {type: 'linear', out: 3, name: 'out'}]},
    epochs: 2, batch_size: 8, checkpoint_every: 1});
  assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
  run = await waitEnded(submitted.body.id, 180);
  assert.equal(run.status, 'succeeded', run.error);
  browser = await openBrowser();
  page = watch(await browser.context.newPage(), problems);
});

after(async () => {
  if (browser) await browser.close();
  assert.deepEqual(problems, []);
});

test('the header names the dataset, links its page and shows its checksum', async () => {
  assert.equal(run.dataset, 'tiny-rgb');
  assert.equal(run.dataset_checksum, dataset.checksum);
  await go(page, `#/experiments/${run.id}`);
  const line = page.locator('.run-header .dataset-line');
  await line.locator('a.dataset-link').waitFor();
  assert.equal(await line.locator('a.dataset-link').getAttribute('href'), '#/datasets/tiny-rgb');
  assert.equal(await line.locator('.dataset-checksum').textContent(), dataset.checksum.slice(0, 12));
  assert.equal(await line.locator('.dataset-checksum').getAttribute('title'), `SHA-256 ${dataset.checksum}`);
  assert.match(await line.textContent(), /^trained on tiny-rgb · [0-9a-f]{12}$/);
});

test('each checkpoint links its file and its weights as safetensors', async () => {
  const rows = page.locator('table.checkpoints tbody tr');
  await rows.first().waitFor();
  const epochs = await rows.evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.epoch)));
  assert.deepEqual(epochs, [2, 1]);
  for (const epoch of epochs) {
    const row = page.locator(`table.checkpoints tbody tr[data-epoch="${epoch}"]`);
    assert.equal(await row.locator('a.download-checkpoint').getAttribute('href'),
      `/api/experiments/${run.id}/checkpoints/${epoch}`);
    assert.equal(await row.locator('a.download-safetensors').getAttribute('href'),
      `/api/experiments/${run.id}/export?format=safetensors&epoch=${epoch}`);
  }
  await shot(page, 'experiment-downloads');
});

test('a click downloads the bytes the API sends', async () => {
  for (const [kind, path, suffix] of [
    ['checkpoint', `/api/experiments/${run.id}/checkpoints/1`, '.ckpt'],
    ['safetensors', `/api/experiments/${run.id}/export?format=safetensors&epoch=1`, '.safetensors']]) {
    const link = page.locator(`table.checkpoints tbody tr[data-epoch="1"] a.download-${kind}`);
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    assert.ok(download.suggestedFilename().endsWith(suffix), download.suggestedFilename());
    const saved = readFileSync(await download.path());
    const expected = await apiBytes(path);
    assert.ok(expected.length > 0);
    assert.ok(saved.equals(expected), `${kind}: ${saved.length} bytes downloaded, the API sends ${expected.length}`);
  }
  // Epoch 1's weights differ from epoch 2's: the link asks for its own epoch.
  const first = await apiBytes(`/api/experiments/${run.id}/export?format=safetensors&epoch=1`);
  const second = await apiBytes(`/api/experiments/${run.id}/export?format=safetensors&epoch=2`);
  assert.ok(!first.equals(second));
});

test('a run on synthetic data names it without a link (it has no page)', async () => {
  const submitted = await call('POST', '/api/experiments', {name: 'on-synthetic', epochs: 1,
    dataset: {name: 'synthetic', train_size: 256},
    model: {layers: [{type: 'linear', out: 8}, {type: 'relu'}, {type: 'linear', out: 10}]}});
  assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
  const synthetic = await waitEnded(submitted.body.id, 180);
  assert.equal(synthetic.dataset, 'synthetic');
  assert.equal(synthetic.dataset_checksum, null);
  await go(page, `#/experiments/${synthetic.id}`);
  const line = page.locator('.run-header .dataset-line');
  await line.locator('.dataset-name').waitFor();
  assert.equal(await line.textContent(), 'trained on synthetic');
  assert.equal(await line.locator('a').count(), 0);
});

test('the dataset link opens the dataset page', async () => {
  await go(page, `#/experiments/${run.id}`);
  await page.locator('.run-header a.dataset-link').click();
  await page.locator('.checksum code').waitFor();
  assert.equal(await page.locator('.checksum code').textContent(), dataset.checksum);
});

// datasets.test.mjs — the dataset pages in real headless Chromium against a real mapsaged
// that tests/test_web.py starts for this file, having registered "tiny-rgb" (3×8×8, three
// classes, class 2 rare, one test example copied from training: both warnings) and written
// its first training image's bytes to MAPSAGE_EXPECTED as JSON.
//
// Run alone: see tests/test_web.py (Browser.test_datasets_in_chromium).

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {openBrowser, go, shot, watch} from './common.mjs';

const EXPECTED = JSON.parse(readFileSync(process.env.MAPSAGE_EXPECTED, 'utf8'));

let browser;
let page;
const problems = [];

before(async () => {
  browser = await openBrowser();
  page = watch(await browser.context.newPage(), problems);
});

after(async () => {
  await browser.close();
  assert.deepEqual(problems, []);
});

test('the list shows every dataset, and which are not read yet', async () => {
  await go(page, '#/datasets');
  const rows = page.locator('table.datasets tbody tr');
  await rows.first().waitFor();
  assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.name)), ['fashion-mnist', 'tiny-rgb']);
  const tiny = page.locator('tr[data-name="tiny-rgb"]');
  assert.deepEqual(await tiny.locator('td').allTextContents(), ['tiny-rgb', 'npz', '3×8×8', '3', '40', '12', '⚠ 2']);
  assert.equal(await page.locator('tr[data-name="fashion-mnist"] .warnings-cell').textContent(), 'not read yet');
  assert.equal(await page.locator('nav a[data-view="datasets"]').getAttribute('aria-current'), 'page');
  await shot(page, 'datasets');
});

test('a dataset page shows its warnings, counts and samples drawn from the bytes', async () => {
  await page.locator('tr[data-name="tiny-rgb"] a').click();
  await page.locator('.sample-grid').waitFor();
  const warnings = await page.locator('.warnings li').allTextContents();
  assert.equal(warnings.length, 2);
  assert.match(warnings.join('\n'), /imbalance: the train split's class 0 has 20 examples, class 2 only 4/);
  assert.match(warnings.join('\n'), /leakage: 1 test examples are exact copies of training examples/);
  const counts = await page.locator('table.class-counts tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td.number')].map((td) => td.textContent)));
  assert.deepEqual(counts, [['20', '4'], ['16', '4'], ['4', '4']]);
  assert.deepEqual(await page.locator('table.class-counts tbody th').allTextContents(), ['0 red', '1 green', '2 blue']);
  assert.equal(await page.locator('.sample-row').count(), 3);
  assert.equal(await page.locator('.sample-row[data-label="2"] canvas').count(), 4);
  // The first sample of class 0 is the first training image: its pixels as the file has them.
  const pixels = await page.locator('.sample-row[data-label="0"] canvas').first().evaluate((canvas) =>
    Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data));
  const plane = 64;
  assert.equal(pixels.length, 4 * plane);
  for (let p = 0; p < plane; p++) {
    assert.deepEqual(pixels.slice(4 * p, 4 * p + 4),
      [EXPECTED[p], EXPECTED[plane + p], EXPECTED[2 * plane + p], 255], `pixel ${p}`);
  }
  await shot(page, 'dataset-tiny-rgb');
});

test('Fashion-MNIST is read when first opened; an unknown name says so', async () => {
  await go(page, '#/datasets/fashion-mnist');
  await page.locator('.sample-grid').waitFor({timeout: 120000});
  assert.equal(await page.locator('.no-warnings').count(), 1);
  assert.equal(await page.locator('table.class-counts tbody tr').count(), 10);
  assert.deepEqual(await page.locator('table.class-counts tbody tr').first().locator('td.number').allTextContents(),
    ['6,000', '1,000']);
  await shot(page, 'dataset-fashion-mnist');
  await go(page, '#/datasets/nope');
  await page.locator('.error').waitFor();
  assert.equal(await page.locator('.error').textContent(), 'No dataset nope.');
});

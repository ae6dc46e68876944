// organise.test.mjs — the everyday controls in real headless Chromium against a real mapsaged
// (tests/test_web.py starts it, one worker, an empty database): tags, note, rename, archive
// and delete; the list's sort, filters and columns; the compare page's config diff, final
// figures and live overlay; on a chart, smoothing, the log scale, PNG and CSV downloads and
// the keyboard cursor; focus rings and the nav's aria-current. What a chart shows is read
// back from its canvas: the curve's colour must be where its data puts it (a blank or wrong
// canvas fails), and the downloaded PNG is read back the same way.
//
// Run alone: MAPSAGE_URL=http://127.0.0.1:8787 node --test-reporter=spec tests/web/organise.test.mjs

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {call, go, openBrowser, shot, submit, waitStatus, watch} from './common.mjs';

const MODEL = {layers: [{type: 'linear', out: 32}, {type: 'relu'}, {type: 'linear', out: 10}]};
const run = (name, lr, epochs = 3) => ({name, dataset: {name: 'synthetic', train_size: 4096}, model: MODEL, epochs,
  optimizer: {type: 'sgd', lr}});

let browser;
let page;
const problems = [];
const ids = {};

// The ids of the rows the list shows, in order, among `among`.
async function listedIds(among) {
  const shown = await page.$$eval('table.experiments tbody tr', (rows) => rows.map((tr) => Number(tr.dataset.id)));
  return shown.filter((id) => among.includes(id));
}

async function setFilter(name, value) {
  const input = page.locator(`.filters [name="${name}"]`);
  await input.fill(value);
  await input.press('Enter');
}

// Reads a LiveChart's canvas back. For each point index, where the data (as the chart draws
// it: smoothed when smoothing is on) puts series `name`, looks for its colour within a few
// pixels; and the same 40 px higher or lower, where a curve is not expected (so that a
// canvas painted all over in that colour fails too). `yOf(value, scale)` places y itself
// when given (the log-scale test computes it independently). With `image` (a PNG as a
// data URL) the image is read instead of the canvas.
async function curvePixels(selector, name, {points = 12, yOf = null, image = null} = {}) {
  return page.evaluate(async ({selector, name, points, yOfText, image}) => {
    const chart = document.querySelector(selector).liveChart;
    const u = chart.plot;
    const canvas = u.ctx.canvas;
    let pixels;
    if (image) {
      const img = new Image();
      img.src = image;
      await img.decode();
      const copy = document.createElement('canvas');
      [copy.width, copy.height] = [img.naturalWidth, img.naturalHeight];
      copy.getContext('2d').drawImage(img, 0, 0);
      pixels = copy.getContext('2d').getImageData(0, 0, copy.width, copy.height);
    } else {
      pixels = u.ctx.getImageData(0, 0, canvas.width, canvas.height);
    }
    const k = chart.names.indexOf(name);
    const hex = chart.options.color(name, k);
    const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const data = chart.data();
    const xs = data[0];
    const ys = data[k + 1];
    const yOf = yOfText ? new Function('value', 'scale', 'bbox', `return (${yOfText})(value, scale, bbox);`) : null;
    const near = (px, py) => {
      for (let dy = -3; dy <= 3; dy++) {
        for (let dx = -3; dx <= 3; dx++) {
          const x = Math.round(px) + dx;
          const y = Math.round(py) + dy;
          if (x < 0 || y < 0 || x >= pixels.width || y >= pixels.height) continue;
          const at = (y * pixels.width + x) * 4;
          const distance = Math.abs(pixels.data[at] - rgb[0]) + Math.abs(pixels.data[at + 1] - rgb[1]) +
            Math.abs(pixels.data[at + 2] - rgb[2]);
          if (distance < 90 && pixels.data[at + 3] > 200) return true;
        }
      }
      return false;
    };
    const indices = [];
    const filled = ys.map((v, i) => (v == null ? -1 : i)).filter((i) => i >= 0);
    for (let j = 0; j < points; j++) indices.push(filled[Math.floor((j + 0.5) * filled.length / points)]);
    let hits = 0;
    let offCurve = 0;
    for (const i of indices) {
      const px = u.valToPos(xs[i], 'x', true);
      const py = yOf ? yOf(ys[i], u.scales.y, u.bbox) : u.valToPos(ys[i], 'y', true);
      if (near(px, py)) hits++;
      const away = py - 40 > u.bbox.top ? py - 40 : py + 40;
      if (near(px, away) && Math.abs(u.valToPos(ys[Math.min(i + 1, ys.length - 1)], 'y', true) - away) > 6) offCurve++;
    }
    return {checked: indices.length, hits, offCurve, width: canvas.width, height: canvas.height};
  }, {selector, name, points, yOfText: yOf ? yOf.toString() : null, image});
}

function assertDrawn(result, what) {
  assert.ok(result.checked >= 8, `${what}: points to check`);
  // Where curves cross, another may lie on top: most points, not all.
  assert.ok(result.hits >= result.checked * 0.75, `${what}: the curve's colour at ${result.hits}/${result.checked} points`);
  assert.ok(result.offCurve <= result.checked * 0.25, `${what}: its colour away from the curve too (${result.offCurve})`);
}

// A download from clicking `locator`: its suggested name and its content.
async function download(locator) {
  const [file] = await Promise.all([page.waitForEvent('download'), locator.click()]);
  const path = await file.path();
  return {name: file.suggestedFilename(), bytes: readFileSync(path)};
}

// --- setup --------------------------------------------------------------------------------

before(async () => {
  browser = await openBrowser();
  page = watch(browser.context.pages()[0] || await browser.context.newPage(), problems);
  ids.a = await submit(run('org-a', 0.1));
  ids.b = await submit(run('org-b', 0.01));
  ids.c = await submit(run('org-c', 0.001));
  for (const id of [ids.a, ids.b, ids.c]) await waitStatus(id, ['succeeded']);
});

after(async () => {
  if (browser) await browser.close();
});

// --- organising ---------------------------------------------------------------------------

test('tags, note and a new name from the experiment page', async () => {
  await go(page, `#/experiments/${ids.a}`);
  await page.locator('h1', {hasText: 'org-a'}).waitFor();
  await page.locator('details.organise summary').click();
  await page.locator('input[name="rename"]').fill('org-a-renamed');
  await page.locator('input[name="tags"]').fill('sweep, best');
  await page.locator('textarea[name="note"]').fill('the highest lr\nsecond line');
  await page.locator('button[data-action="save"]').click();
  await page.locator('.organise-status', {hasText: 'saved'}).waitFor();
  const {body} = await call('GET', `/api/experiments/${ids.a}`);
  assert.deepEqual([body.name, body.tags, body.note], ['org-a-renamed', ['best', 'sweep'], 'the highest lr\nsecond line']);
  await page.locator('h1', {hasText: 'org-a-renamed'}).waitFor();
  assert.deepEqual(await page.locator('.organise-shown .tag').allInnerTexts(), ['best', 'sweep']);
  assert.equal(await page.locator('.organise-shown .note-text').innerText(), 'the highest lr\nsecond line');
  // A bad tag is refused by the server, which names the field; nothing changes.
  await page.locator('input[name="tags"]').fill('bad!tag, ok');
  await page.locator('input[name="tags"]').press('Enter');
  await page.locator('.error', {hasText: 'tags: element 0 must be a tag'}).waitFor();
  assert.deepEqual((await call('GET', `/api/experiments/${ids.a}`)).body.tags, ['best', 'sweep']);
  await shot(page, 'organise-experiment');
});

test('archive from the experiment page, and back', async () => {
  await go(page, `#/experiments/${ids.b}`);
  await page.locator('h1', {hasText: 'org-b'}).waitFor();
  await page.locator('.run-header button[data-action="archive"]', {hasText: 'Archive'}).click();
  await page.locator('.organise-shown .tag.archived').waitFor();
  assert.ok((await call('GET', `/api/experiments/${ids.b}`)).body.archived_at);
  await page.locator('.run-header button[data-action="archive"]', {hasText: 'Unarchive'}).click();
  await page.locator('.organise-shown .tag.archived').waitFor({state: 'detached'});
  assert.equal((await call('GET', `/api/experiments/${ids.b}`)).body.archived_at, null);
});

test('the list filters by tag, by a config condition, and says a bad one', async () => {
  const ours = [ids.a, ids.b, ids.c];
  await go(page, '#/experiments');
  await page.locator(`tr[data-id="${ids.c}"]`).waitFor();
  assert.deepEqual(await listedIds(ours), [ids.c, ids.b, ids.a]);
  await setFilter('tag', 'best');
  await page.waitForFunction((id) => document.querySelectorAll('table.experiments tbody tr').length === 1 &&
    document.querySelector(`tr[data-id="${id}"]`), ids.a);
  assert.deepEqual(await page.locator(`tr[data-id="${ids.a}"] .tags .tag`).allInnerTexts(), ['best', 'sweep']);
  assert.match(page.url(), /tag=best/);
  await setFilter('tag', '');
  await setFilter('where', 'optimizer.lr<0.05');
  await page.waitForFunction((a) => !document.querySelector(`tr[data-id="${a}"]`), ids.a);
  assert.deepEqual(await listedIds(ours), [ids.c, ids.b]);
  await setFilter('where', 'optimizer.lr>=0.01,optimizer.type=sgd');
  await page.waitForFunction((c) => !document.querySelector(`tr[data-id="${c}"]`), ids.c);
  assert.deepEqual(await listedIds(ours), [ids.b, ids.a]);
  await setFilter('where', 'optimizer.lrr>1');
  await page.locator('p.error', {hasText: "where: optimizer.lrr: no experiment's config has this field"}).waitFor();
  await setFilter('where', '');
  await page.locator(`tr[data-id="${ids.c}"]`).waitFor();
  assert.equal(await page.locator('p.error').isHidden(), true);
});

test('the list sorts by a heading, up then down, and shows chosen columns', async () => {
  const ours = [ids.a, ids.b, ids.c];
  await go(page, '#/experiments?columns=optimizer.lr');
  await page.locator(`tr[data-id="${ids.c}"]`).waitFor();
  const heading = page.locator('th[data-sort="optimizer.lr"]');
  assert.equal(await heading.getAttribute('aria-sort'), 'none');
  await heading.locator('button').click();
  await page.waitForFunction(() => document.querySelector('th[data-sort="optimizer.lr"]')
    .getAttribute('aria-sort') === 'ascending');
  await page.waitForFunction((expected) => {
    const shown = [...document.querySelectorAll('table.experiments tbody tr')].map((tr) => Number(tr.dataset.id))
      .filter((id) => expected.includes(id));
    return shown.join() === expected.join();
  }, [ids.c, ids.b, ids.a]);
  assert.deepEqual(await listedIds(ours), [ids.c, ids.b, ids.a]);
  assert.deepEqual(await Promise.all(ours.map((id) => page.locator(`tr[data-id="${id}"] td.extra`).innerText())),
    ['0.1', '0.01', '0.001']);
  await page.locator('th[data-sort="name"] button').click();
  await page.waitForFunction(() => document.querySelector('th[data-sort="name"]').getAttribute('aria-sort') ===
    'ascending');
  await page.waitForFunction((expected) => [...document.querySelectorAll('table.experiments tbody tr')]
    .map((tr) => Number(tr.dataset.id)).filter((id) => expected.includes(id)).join() === expected.join(),
  [ids.a, ids.b, ids.c]); // org-a-renamed, org-b, org-c
  await page.locator('th[data-sort="name"] button').click();
  await page.waitForFunction(() => document.querySelector('th[data-sort="name"]').getAttribute('aria-sort') ===
    'descending');
  await page.waitForFunction((expected) => [...document.querySelectorAll('table.experiments tbody tr')]
    .map((tr) => Number(tr.dataset.id)).filter((id) => expected.includes(id)).join() === expected.join(),
  [ids.c, ids.b, ids.a]);
  assert.match(page.url(), /sort=name&order=desc|order=desc.*sort=name/);
  await shot(page, 'organise-list-sorted');
});

test('archive and delete from the list', async () => {
  ids.doomed = await submit(run('org-doomed', 0.05, 1));
  await waitStatus(ids.doomed, ['succeeded']);
  await go(page, '#/experiments');
  const row = page.locator(`tr[data-id="${ids.c}"]`);
  await row.waitFor();
  await row.locator('button[data-action="archive"]').click();
  await row.waitFor({state: 'detached'}); // archived runs leave the default list
  assert.ok((await call('GET', `/api/experiments/${ids.c}`)).body.archived_at);
  await page.locator('select[name="archived"]').selectOption('1');
  await page.locator(`tr[data-id="${ids.c}"] .tag.archived`).waitFor();
  assert.equal(await page.locator(`tr[data-id="${ids.a}"]`).count(), 0, 'only archived runs');
  await page.locator(`tr[data-id="${ids.c}"] button[data-action="archive"]`, {hasText: 'Unarchive'}).click();
  await page.locator(`tr[data-id="${ids.c}"]`).waitFor({state: 'detached'});
  assert.equal((await call('GET', `/api/experiments/${ids.c}`)).body.archived_at, null);
  await page.locator('select[name="archived"]').selectOption('');

  const doomed = page.locator(`tr[data-id="${ids.doomed}"]`);
  await doomed.waitFor();
  const remove = doomed.locator('button[data-action="delete"]');
  await remove.click();
  assert.equal(await remove.innerText(), 'Really delete?');
  await remove.click();
  await doomed.waitFor({state: 'detached'});
  assert.equal((await call('GET', `/api/experiments/${ids.doomed}`)).status, 404);
  // Deleted elsewhere (the API, another tab): the row goes too, by the stream.
  await page.evaluate(() => { window.notReloaded = true; });
  const elsewhere = await submit(run('org-elsewhere', 0.05, 1));
  await waitStatus(elsewhere, ['succeeded']);
  await page.locator(`tr[data-id="${elsewhere}"]`).waitFor();
  assert.equal((await call('DELETE', `/api/experiments/${elsewhere}`)).status, 200);
  await page.locator(`tr[data-id="${elsewhere}"]`).waitFor({state: 'detached'});
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'by the stream, not a reload');
});

// --- compare ------------------------------------------------------------------------------

test('compare: the config values that differ, all on demand, and the final figures', async () => {
  await go(page, `#/compare?ids=${ids.a},${ids.b},${ids.c}&metric=loss/total&by=step`);
  const lr = page.locator('table.diff tr[data-path="optimizer.lr"] td');
  await lr.first().waitFor();
  assert.deepEqual(await lr.allInnerTexts(), ['0.1', '0.01', '0.001']);
  const name = page.locator('table.diff tr[data-path="name"] td');
  assert.deepEqual(await name.allInnerTexts(), ['org-a-renamed', 'org-b', 'org-c']);
  assert.equal(await page.locator('table.diff tr[data-path="dataset.name"]').count(), 0, 'the same in all: hidden');
  await page.locator('input[name="all-values"]').check();
  assert.deepEqual(await page.locator('table.diff tr[data-path="dataset.name"] td').allInnerTexts(),
    ['synthetic', 'synthetic', 'synthetic']);
  const rows = await page.locator('table.diff tbody tr').count();
  assert.ok(rows > 10, `every value: ${rows} rows`);
  const figures = await page.locator('table.figures-table tr[data-figure="final test accuracy"] td').allInnerTexts();
  const expected = [];
  for (const id of [ids.a, ids.b, ids.c]) {
    const {body} = await call('GET', `/api/experiments/${id}`);
    expected.push(`${(body.summary.final_test_accuracy * 100).toFixed(2)}%`);
  }
  assert.deepEqual(figures, expected);
  await shot(page, 'organise-compare');
});

test('a chart draws its curve where the data says, smoothed and on a log scale', async () => {
  await go(page, `#/compare?ids=${ids.b}&metric=loss/total&by=step`);
  const selector = 'figure[data-kind="compare"]';
  await page.waitForFunction((s) => {
    const chart = document.querySelector(s)?.liveChart;
    return chart && chart.plot && chart.x.length > 50;
  }, selector);
  const name = await page.$eval(selector, (f) => f.liveChart.names[0]);
  assertDrawn(await curvePixels(selector, name), 'raw');
  // A blank canvas fails the same check.
  await page.$eval(selector, (f) => {
    const {ctx} = f.liveChart.plot;
    ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  });
  const blank = await curvePixels(selector, name);
  assert.equal(blank.hits, 0, 'a cleared canvas shows no curve');
  await page.$eval(selector, (f) => f.liveChart.plot.redraw());

  // Smoothing: the slider, the smoothed values as an EMA computes them, drawn; the raw curve
  // stays (faint) as a second series.
  const raw = await page.$eval(selector, (f) => f.liveChart.columns[0].slice());
  const slider = page.locator(`${selector} input.smoothing`);
  await slider.fill('0.9');
  await page.waitForFunction((s) => document.querySelector(s).dataset.smoothing === '0.9' &&
    document.querySelector(s).liveChart.plot.series.length === 3, selector);
  assert.equal(await page.locator(`${selector} .smoothing-value`).innerText(), '0.90');
  let last = 0;
  const expected = raw.map((v, i) => {
    last = 0.9 * last + 0.1 * v;
    return last / (1 - 0.9 ** (i + 1));
  });
  const drawn = await page.$eval(selector, (f) => f.liveChart.data()[1]);
  assert.equal(drawn.length, expected.length);
  for (let i = 0; i < drawn.length; i += 7) assert.ok(Math.abs(drawn[i] - expected[i]) < 1e-9, `EMA at ${i}`);
  assert.ok(drawn.some((v, i) => Math.abs(v - raw[i]) > 0.01), 'smoothing changes the curve');
  await page.waitForFunction((s) => document.querySelector(s).liveChart.flushes > 0, selector);
  assertDrawn(await curvePixels(selector, name), 'smoothed');
  await slider.fill('0');
  await page.waitForFunction((s) => document.querySelector(s).liveChart.plot.series.length === 2, selector);

  // Log scale: y placed by log10 between the scale's ends, computed here, not by uPlot.
  await page.locator(`${selector} input.log-scale`).check();
  await page.waitForFunction((s) => document.querySelector(s).liveChart.plot?.scales.y.distr === 3, selector);
  const logY = (value, scale, bbox) => bbox.top + bbox.height *
    (1 - (Math.log10(value) - Math.log10(scale.min)) / (Math.log10(scale.max) - Math.log10(scale.min)));
  assertDrawn(await curvePixels(selector, name, {yOf: logY}), 'log scale');
  // ...and not where a linear scale would put it (the loss spans more than a decade's tenth).
  const linearY = (value, scale, bbox) => bbox.top + bbox.height * (1 - (value - scale.min) / (scale.max - scale.min));
  const linear = await curvePixels(selector, name, {yOf: linearY});
  assert.ok(linear.hits < linear.checked * 0.75, `a linear reading of the log chart matches ${linear.hits}`);
  await page.locator(`${selector} input.log-scale`).uncheck();
  await page.waitForFunction((s) => document.querySelector(s).liveChart.plot?.scales.y.distr === 1, selector);
});

test('a chart downloads as PNG (what is drawn) and as CSV (the values)', async () => {
  const selector = 'figure[data-kind="compare"]';
  const name = await page.$eval(selector, (f) => f.liveChart.names[0]);
  const png = await download(page.locator(`${selector} button[data-download="png"]`));
  assert.equal(png.name, 'loss-total-by-step.png');
  assert.deepEqual([...png.bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const image = `data:image/png;base64,${png.bytes.toString('base64')}`;
  const fromFile = await curvePixels(selector, name, {image});
  assertDrawn(fromFile, 'the PNG');
  assert.equal(png.bytes.readUInt32BE(16), fromFile.width);
  assert.equal(png.bytes.readUInt32BE(20), fromFile.height);

  const csv = await download(page.locator(`${selector} button[data-download="csv"]`));
  assert.equal(csv.name, 'loss-total-by-step.csv');
  const lines = csv.bytes.toString('utf8').trim().split('\n');
  assert.equal(lines[0], `step,#${ids.b} org-b`);
  const {body} = await call('GET', `/api/experiments/${ids.b}/metrics?names=loss/total`);
  const curve = body['loss/total'];
  assert.ok(curve.step.length > 50);
  assert.equal(lines.length - 1, curve.step.length);
  for (let i = 0; i < curve.step.length; i += 11) {
    const [step, value] = lines[i + 1].split(',').map(Number);
    assert.equal(step, curve.step[i]);
    assert.ok(Math.abs(value - curve.value[i]) < 1e-12, `row ${i}`);
  }
});

test('a chart reads out its values from the keyboard', async () => {
  const selector = 'figure[data-kind="compare"]';
  const plot = page.locator(`${selector} .plot`);
  await page.locator(`${selector} button[data-download="csv"]`).focus();
  await page.keyboard.press('Tab'); // from the keyboard: the ring shows (a click shows none)
  assert.equal(await plot.evaluate((element) => element === document.activeElement), true);
  const outline = await plot.evaluate((element) => getComputedStyle(element).outlineStyle);
  assert.notEqual(outline, 'none', 'the focused chart shows a ring');
  const {x, values} = await page.$eval(selector, (f) => ({x: f.liveChart.x, values: f.liveChart.columns[0]}));
  await page.keyboard.press('Home');
  await page.waitForFunction((s) => document.querySelector(s).dataset.cursor === '0', selector);
  assert.match(await page.locator(`${selector} .chart-readout`).innerText(), new RegExp(`^step ${x[0]}: `));
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction((s) => document.querySelector(s).dataset.cursor === '2', selector);
  const readout = await page.locator(`${selector} .chart-readout`).innerText();
  assert.match(readout, new RegExp(`^step ${x[2]}: #${ids.b} org-b `));
  const shown = Number(readout.split(' ').at(-1));
  assert.ok(Math.abs(shown - values[2]) <= Math.abs(values[2]) * 0.01, `${shown} against ${values[2]}`);
  await page.keyboard.press('End');
  await page.waitForFunction(([s, n]) => document.querySelector(s).dataset.cursor === String(n - 1), [selector, x.length]);
  assert.equal(await page.locator(`${selector} .chart-readout`).getAttribute('aria-live'), 'polite');
});

test('compare stays live while a run trains', {timeout: 150000}, async () => {
  ids.live = await submit(run('org-live', 0.05, 3000));
  await waitStatus(ids.live, ['running']);
  await go(page, `#/compare?ids=${ids.live}&metric=loss/total&by=step`);
  const selector = 'figure[data-kind="compare"]';
  await page.waitForFunction((s) => document.querySelector(s)?.liveChart?.x.length > 0, selector);
  const first = await page.$eval(selector, (f) => f.liveChart.x.at(-1));
  await page.evaluate(() => { window.notReloaded = true; });
  await page.waitForFunction(([s, step]) => document.querySelector(s).liveChart.x.at(-1) > step, [selector, first],
    {timeout: 60000});
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'new points without reloading the page');
  await call('POST', `/api/experiments/${ids.live}/cancel`);
  await waitStatus(ids.live, ['cancelled']);
});

test('a study\'s mean curves have the same tools: smoothing, log scale, PNG, CSV', {timeout: 240000}, async () => {
  const spec = {name: 'org-study', seeds: 1,
    base: {dataset: {name: 'synthetic', train_size: 4096}, model: MODEL, stages: [{name: 'main', epochs: 2}]},
    teacher: {experiment: ids.b}, arms: {kd: {stages: [{name: 'main', epochs: 2, distill_weight: 0.5}]}}};
  const {status, body} = await call('POST', '/api/studies', spec);
  assert.equal(status, 201, JSON.stringify(body));
  const deadline = Date.now() + 200000;
  while ((await call('GET', `/api/studies/${body.id}`)).body.status !== 'succeeded') {
    assert.ok(Date.now() < deadline, 'the study ends');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await go(page, `#/studies/${body.id}`);
  const selector = 'figure.band-chart[data-kind="val/accuracy"]';
  await page.waitForFunction((s) => Number(document.querySelector(s)?.dataset.series) > 0 &&
    document.querySelector(s).bandChart.plot, selector);
  const curves = (await call('GET', `/api/studies/${body.id}/curves?names=val/accuracy`)).body['val/accuracy'];
  assert.ok(curves.series.length > 0);

  const csv = await download(page.locator(`${selector} button[data-download="csv"]`));
  assert.equal(csv.name, 'validation-accuracy-per-epoch.csv'); // named after the chart's title
  const lines = csv.bytes.toString('utf8').trim().split('\n');
  const header = lines[0].split(',');
  assert.equal(header[0], 'epoch');
  const shown = await page.$eval(selector, (f) => f.bandChart.given.filter((s) => s.x.length).map((s) => s.label));
  assert.equal(header.length, 1 + 3 * shown.length);
  const column = header.findIndex((name) => name.endsWith(' mean'));
  assert.ok(column > 0);
  const given = await page.$eval(selector, (f) => f.bandChart.given.find((s) => s.x.length).mean);
  assert.ok(given.length > 0);
  assert.ok(curves.series.some((s) => JSON.stringify(s.mean) === JSON.stringify(given)), 'a mean the API gives');
  for (let row = 0; row < given.length; row++) {
    assert.ok(Math.abs(Number(lines[row + 1].split(',')[column]) - given[row]) < 1e-12, `row ${row}`);
  }

  await page.locator(`${selector} input.smoothing`).fill('0.5');
  await page.waitForFunction((s) => document.querySelector(s).dataset.smoothing === '0.5', selector);
  const smoothed = await page.$eval(selector, (f) => f.bandChart.series[0].mean);
  let last = 0;
  given.forEach((v, i) => {
    last = 0.5 * last + 0.5 * v;
    assert.ok(Math.abs(smoothed[i] - last / (1 - 0.5 ** (i + 1))) < 1e-12, `smoothed mean ${i}`);
  });
  await page.locator(`${selector} input.log-scale`).check();
  await page.waitForFunction((s) => document.querySelector(s).bandChart.plot?.scales.y.distr === 3, selector);
  const png = await download(page.locator(`${selector} button[data-download="png"]`));
  assert.deepEqual([...png.bytes.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  assert.ok(png.bytes.length > 2000, `a drawn chart, not an empty image (${png.bytes.length} bytes)`);

  // From the keyboard: Tab onto the plot, Home to the first epoch, the values read out.
  await page.locator(`${selector} button[data-download="csv"]`).focus();
  await page.keyboard.press('Tab');
  await page.keyboard.press('Home');
  await page.waitForFunction((s) => document.querySelector(s).dataset.cursor === '0', selector);
  const readout = await page.locator(`${selector} .chart-readout`).innerText();
  const first = await page.$eval(selector, (f) => f.bandChart.series.map((s) => s.label));
  assert.match(readout, new RegExp(`^epoch 1: ${first[0]} \\d`));

  // The study's own tags, note, name and archive, from its page; the list hides it then.
  await page.locator('.study-header details.organise summary').click();
  await page.locator('.study-header input[name="rename"]').fill('org-study-2');
  await page.locator('.study-header input[name="tags"]').fill('kd first-try');
  await page.locator('.study-header textarea[name="note"]').fill('one seed only');
  await page.locator('.study-header button[data-action="save"]').click();
  await page.locator('.study-header .organise-status', {hasText: 'saved'}).waitFor();
  const saved = (await call('GET', `/api/studies/${body.id}`)).body;
  assert.deepEqual([saved.name, saved.tags, saved.note], ['org-study-2', ['first-try', 'kd'], 'one seed only']);
  await page.locator('.study-header h1', {hasText: 'org-study-2'}).waitFor();
  await page.locator('.study-header button[data-action="archive"]').click();
  await page.locator('.study-header .organise-shown .tag.archived').waitFor();
  assert.ok((await call('GET', `/api/studies/${body.id}`)).body.archived_at);
  assert.equal(await page.locator('.study-header button[data-action="delete"]').count(), 0, 'a study is not deleted');
  await go(page, '#/studies');
  await page.waitForFunction(() => document.querySelector('table.studies tbody tr') ||
    !document.querySelector('p.empty').hidden); // the list has been read
  assert.equal(await page.locator(`table.studies tr[data-id="${body.id}"]`).count(), 0, 'archived: not listed');
  await page.locator('select[name="archived"]').selectOption('1');
  const listed = page.locator(`table.studies tr[data-id="${body.id}"]`);
  await listed.waitFor();
  assert.deepEqual(await listed.locator('.tag').allInnerTexts(), ['first-try', 'kd', 'archived']);
});

// --- accessibility ------------------------------------------------------------------------

test('focus rings, aria-current in the nav, the live indicator in words', async () => {
  await go(page, '#/submit');
  const textarea = page.locator('.editor textarea');
  await textarea.waitFor();
  await textarea.focus();
  const ring = await page.locator('.editor').evaluate((element) => getComputedStyle(element).boxShadow);
  assert.notEqual(ring, 'none', 'the config editor shows focus');
  assert.equal(await page.locator('nav a[data-view="submit"]').getAttribute('aria-current'), 'page');
  assert.equal(await page.locator('nav a[data-view="experiments"]').getAttribute('aria-current'), null);
  await go(page, '#/experiments');
  await page.locator('#live.on').waitFor();
  assert.equal(await page.locator('#live .live-text').innerText(), 'live');
  // Every control of the list reached by Tab shows a ring.
  await page.locator('select[name="status"]').focus();
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press('Tab');
    const style = await page.evaluate(() => {
      const element = document.activeElement;
      const computed = getComputedStyle(element);
      return {tag: element.tagName, outline: computed.outlineStyle, shadow: computed.boxShadow};
    });
    assert.ok(style.outline !== 'none' || style.shadow !== 'none', `${style.tag} shows focus`);
  }
});

test('no page errors and no console errors', () => {
  assert.deepEqual(problems.filter((p) => !/the server responded with a status of (400|409)/.test(p)), []);
});

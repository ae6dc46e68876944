// dashboard.test.mjs — the dashboard in real headless Chromium (Debian's, driven by
// playwright-core) against a real mapsaged that tests/test_web.py starts with a temporary
// database and hands over as MAPSAGE_URL. The tests run in order and share the daemon's
// experiments: a long "blocker" run, the "ui" run submitted from the form, a two-stage run.
// Every page is kept as a screenshot in MAPSAGE_ARTIFACTS (the build's artifacts/).
//
// Run alone: MAPSAGE_URL=http://127.0.0.1:8787 node --test-reporter=spec tests/web/dashboard.test.mjs

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {mkdtempSync, mkdirSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const BASE = process.env.MAPSAGE_URL;
const ARTIFACTS = process.env.MAPSAGE_ARTIFACTS || join(tmpdir(), 'mapsage-artifacts');
const CHROMIUM = process.env.MAPSAGE_CHROMIUM || '/usr/bin/chromium';
if (!BASE) throw new Error('MAPSAGE_URL is not set: run tests/test_web.py, or point it at a running mapsaged');

const MODEL = {layers: [{type: 'linear', out: 32}, {type: 'relu'}, {type: 'linear', out: 10}]};
const UI = {name: 'ui', dataset: {name: 'synthetic', train_size: 4096}, model: MODEL, epochs: 20};
const STAGED = {name: 'ui-stages', dataset: {name: 'synthetic', train_size: 4096}, model: MODEL,
  stages: [{name: 'warmup', epochs: 4, lr: 0.01}, {name: 'main', epochs: 8}]};
const BLOCKER = {name: 'blocker', dataset: {name: 'synthetic', train_size: 4096}, model: MODEL, epochs: 3000};
const BAD = `{
  "name": "bad",
  "dataset": {"name": "synthetic"},
  "model": {"layers": [{"type": "linear", "out": 7}]},
  "epochs": 0
}
`;

let profile;
let context;
let page;
const problems = []; // page errors and console errors, checked at the end
const ids = {};

// --- helpers -----------------------------------------------------------------------------

async function call(method, path, body) {
  const response = await fetch(BASE + path, {method, body: body === undefined ? undefined
    : typeof body === 'string' ? body : JSON.stringify(body)});
  return {status: response.status, body: await response.json()};
}

async function submit(config) {
  const {status, body} = await call('POST', '/api/experiments', config);
  assert.equal(status, 201, JSON.stringify(body));
  return body.id;
}

async function waitStatus(id, statuses, timeout = 120000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const {body} = await call('GET', `/api/experiments/${id}`);
    if (statuses.includes(body.status)) return body;
    if (Date.now() > deadline) throw new Error(`experiment ${id} still ${body.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function watch(p) {
  p.setDefaultTimeout(60000);
  p.on('pageerror', (error) => problems.push(`${p.url()}: page error: ${error.message}`));
  p.on('console', (message) => {
    // Chromium reports each 4xx answer (the refused config, the refused SQL) as a console
    // error; those are the point of some tests. Anything else is a fault.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`${p.url()}: console: ${message.text()}`);
    }
  });
  return p;
}

async function shot(p, name) {
  await p.screenshot({path: join(ARTIFACTS, `${name}.png`), fullPage: true});
}

async function go(p, hash) {
  await p.goto(`${BASE}/${hash}`);
}

// What a chart holds, read from the LiveChart behind a <figure data-kind=…>.
function chartState(p, kind) {
  return p.$eval(`figure[data-kind="${kind}"]`, (figure) => {
    const chart = figure.liveChart;
    return {x: chart.x, names: chart.names, filled: chart.columns.map((c) => c.filter((v) => v != null).length),
      markers: chart.options.markers().map(({x, label}) => ({x, label})), flushes: chart.flushes};
  });
}

// --- setup -------------------------------------------------------------------------------

before(async () => {
  mkdirSync(ARTIFACTS, {recursive: true});
  profile = mkdtempSync(join(tmpdir(), 'mapsage-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: {width: 1280, height: 900},
    colorScheme: 'light',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = watch(context.pages()[0] || await context.newPage());
});

after(async () => {
  if (context) await context.close();
  if (profile) rmSync(profile, {recursive: true, force: true});
});

// --- the tests ---------------------------------------------------------------------------

test('the experiments list follows the daemon live', async () => {
  await go(page, '#/experiments');
  await page.getByText('No experiments yet').waitFor();
  await page.locator('#live.on').waitFor(); // the global stream is connected
  await page.evaluate(() => { window.notReloaded = true; });

  ids.blocker = await submit(BLOCKER);
  const row = page.locator(`tr[data-id="${ids.blocker}"]`);
  await row.waitFor();
  await page.locator(`tr[data-id="${ids.blocker}"][data-status="running"]`).waitFor();
  await page.waitForFunction((id) => /epoch \d+\/3000/.test(
    document.querySelector(`tr[data-id="${id}"] td.progress`).textContent), ids.blocker);
  assert.equal(await row.locator('td.name').innerText(), 'blocker');
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'the row came by the stream, not a reload');
});

test('a config submitted from the form streams its loss curve live and ends succeeded', {timeout: 150000}, async () => {
  const metricRequests = [];
  const streamRequests = [];
  page.on('request', (request) => {
    if (/\/api\/experiments\/\d+\/metrics/.test(request.url())) metricRequests.push(request.url());
    if (/\/api\/experiments\/\d+\/stream/.test(request.url())) streamRequests.push(request.url());
  });

  await go(page, '#/submit');
  await page.locator('textarea[name=config]').fill(JSON.stringify(UI, null, 2));
  await page.locator('form.submit-form button[type=submit]').click();
  await page.waitForURL(/#\/experiments\/\d+$/);
  ids.ui = Number(/#\/experiments\/(\d+)$/.exec(page.url())[1]);
  assert.equal((await call('GET', `/api/experiments/${ids.ui}`)).body.name, 'ui');
  // One worker, busy with the blocker: the new run waits, its charts empty.
  await page.locator('.run-header .status[data-status="queued"]').waitFor();

  // From now on, every frame: the status shown and the points on the loss chart.
  await page.evaluate(() => {
    window.samples = [];
    const sample = () => {
      const status = document.querySelector('.run-header .status');
      const figure = document.querySelector('figure[data-kind="loss"]');
      window.samples.push({status: status && status.dataset.status, points: figure ? Number(figure.dataset.points) : 0});
      if (window.samples.length < 100000) requestAnimationFrame(sample);
    };
    sample();
  });

  // Cancel the blocker from the list, in a second tab: both tabs follow on their own.
  const list = watch(await context.newPage());
  try {
    await go(list, '#/experiments');
    const cancel = list.locator(`tr[data-id="${ids.blocker}"] button[data-action="cancel"]`);
    await cancel.click();
    await list.locator(`tr[data-id="${ids.blocker}"] button[data-armed="yes"]`).waitFor();
    await cancel.click();
    await list.locator(`tr[data-id="${ids.blocker}"][data-status="cancelled"]`).waitFor();

    await page.locator('.run-header .status[data-status="succeeded"]').waitFor({timeout: 120000});
    await list.locator(`tr[data-id="${ids.ui}"][data-status="succeeded"]`).waitFor();

    const curves = (await call('GET', `/api/experiments/${ids.ui}/metrics`)).body;
    const steps = curves['loss/total'].step;
    const samples = await page.evaluate(() => window.samples);
    const whileRunning = samples.filter((s) => s.status === 'running' && s.points > 0 && s.points < steps.length);
    assert.ok(whileRunning.length > 0, `the loss chart gained points while the run ran (samples: ${samples.length})`);
    const counts = new Set(samples.filter((s) => s.status === 'running').map((s) => s.points));
    assert.ok(counts.size >= 2, `the chart grew in several frames while running, saw ${[...counts].join(', ')}`);
    for (let i = 1; i < samples.length; i++) assert.ok(samples[i].points >= samples[i - 1].points, 'never shrinks');

    await page.waitForFunction((n) => document.querySelector('figure[data-kind="loss"]').dataset.points === String(n),
      steps.length);
    const loss = await chartState(page, 'loss');
    assert.deepEqual(loss.x, steps, 'every step once, in order: what the API stored');
    assert.deepEqual(loss.names.sort(), Object.keys(curves).filter((n) => n.startsWith('loss/')).sort());
    assert.ok(loss.names.includes('loss/total') && loss.names.includes('loss/task'), loss.names.join());
    const accuracy = await chartState(page, 'accuracy');
    assert.deepEqual(accuracy.x, curves['test/accuracy'].epoch);
    for (const name of ['train/accuracy', 'val/accuracy', 'test/accuracy']) {
      assert.ok(accuracy.names.includes(name), `${name} in ${accuracy.names.join()}`);
    }
    // The sampler has run once a frame since before the first point: one redraw per frame at most.
    const frames = await page.evaluate(() => window.samples.length);
    assert.ok(loss.flushes <= frames, `${loss.flushes} redraws in ${frames} frames, for ${steps.length} points`);
    assert.equal(metricRequests.length, 1, 'the history is read once; the rest comes by the stream');
    assert.ok(!streamRequests[0].includes('last_event_id'), 'nothing stored yet: the stream starts at the beginning');

    const summary = (await call('GET', `/api/experiments/${ids.ui}`)).body.summary;
    await page.waitForFunction(() => !document.querySelector('.figures').hidden);
    const figures = await page.locator('.figures').innerText();
    assert.ok(figures.includes(`${(summary.final_test_accuracy * 100).toFixed(2)}%`), figures);
    assert.ok((await page.locator('pre.log').innerText()).includes('finished'), 'the log shows the end of the run');
    await shot(page, 'experiment');
    await shot(list, 'experiments');

    // Opened again once it has ended: history, then a stream resumed after the last stored event.
    await go(page, '#/experiments');
    const resumed = page.waitForRequest(/\/api\/experiments\/\d+\/stream/);
    await go(page, `#/experiments/${ids.ui}`);
    const last = steps[steps.length - 1];
    assert.ok((await resumed).url().endsWith(`last_event_id=${last}.3`), (await resumed).url());
    await page.waitForFunction((n) => {
      const figure = document.querySelector('figure[data-kind="loss"]');
      return figure && figure.dataset.points === String(n);
    }, steps.length);
    await page.waitForTimeout(300); // the stream's replay (there should be none) and its end
    assert.deepEqual((await chartState(page, 'loss')).x, steps, 'nothing replayed twice');
  } finally {
    await list.close();
    await page.bringToFront();
  }
});

test('a refused config shows each error beside its field', async () => {
  await go(page, '#/submit');
  const expected = (await call('POST', '/api/experiments', BAD)).body.errors;
  assert.ok(expected.length >= 2, JSON.stringify(expected));
  await page.locator('textarea[name=config]').fill(BAD);
  await page.locator('form.submit-form button[type=submit]').click();
  await page.locator('ul.field-errors li').nth(expected.length - 1).waitFor();
  assert.equal(await page.locator('ul.field-errors li').count(), expected.length);
  assert.ok(page.url().endsWith('#/submit'), 'a refused config stays on the form');
  const lineOf = {'model.layers[0].out': 4, epochs: 5, 'dataset.name': 3};
  for (const {path, message} of expected) {
    const item = page.locator(`ul.field-errors li[data-path="${path}"]`);
    assert.equal(await item.locator('.path').innerText(), path);
    assert.equal(await item.locator('.message').innerText(), message);
    const line = lineOf[path];
    if (!line) continue;
    assert.equal(await item.locator('.line').innerText(), `line ${line}`);
    assert.ok(await page.locator(`.gutter div:nth-child(${line})`).evaluate((d) => d.classList.contains('bad')),
      `line ${line} is marked`);
    assert.ok((await page.locator(`.mark-note[data-line="${line}"]`).innerText()).includes(message),
      `the message sits at the end of line ${line}`);
  }
  assert.ok(!(await page.locator('.gutter div:nth-child(2)').evaluate((d) => d.classList.contains('bad'))),
    'a line without an error is not marked');
  // Clicking an error selects its field in the editor.
  await page.locator('ul.field-errors li[data-path="epochs"] button').click();
  const selected = await page.locator('textarea[name=config]').evaluate((t) =>
    t.value.slice(t.selectionStart, t.selectionEnd));
  assert.equal(selected, '"epochs": 0');
  await shot(page, 'submit-errors');

  // Not even JSON: the server names the line, and that line is marked.
  await page.locator('textarea[name=config]').fill('{"name": "x",\n  "epochs": 3,,\n  "seed": 1}\n');
  await page.locator('form.submit-form button[type=submit]').click();
  await page.locator('ul.field-errors li[data-path=""]').waitFor();
  assert.match(await page.locator('ul.field-errors li[data-path=""] .message').innerText(), /line 2/);
  assert.ok(await page.locator('.gutter div:nth-child(2)').evaluate((d) => d.classList.contains('bad')));
});

test('compare overlays two runs, by step and by epoch', async () => {
  ids.staged = await submit(STAGED);
  await waitStatus(ids.staged, ['succeeded']);
  const staged = (await call('GET', `/api/experiments/${ids.staged}/metrics?names=loss/total`)).body['loss/total'];
  const ui = (await call('GET', `/api/experiments/${ids.ui}/metrics?names=loss/total`)).body['loss/total'];

  await go(page, `#/compare?ids=${ids.ui},${ids.staged}&metric=loss/total`);
  await page.locator('figure[data-kind="compare"][data-series="2"]').waitFor();
  let state = await chartState(page, 'compare');
  assert.deepEqual(state.names, [`#${ids.ui} ui`, `#${ids.staged} ui-stages`]);
  assert.deepEqual(state.filled, [ui.step.length, staged.step.length], 'every point of both runs');
  assert.equal(state.x[state.x.length - 1], Math.max(ui.step.at(-1), staged.step.at(-1)));
  const legend = await page.locator('figure[data-kind="compare"] .u-legend').innerText();
  assert.ok(legend.includes(`#${ids.ui} ui`) && legend.includes(`#${ids.staged} ui-stages`), legend);

  await page.locator('input[name=by][value=epoch]').check();
  await page.locator('figure[data-kind="compare"] figcaption', {hasText: 'by epoch'}).waitFor();
  await page.locator('figure[data-kind="compare"][data-series="2"]').waitFor();
  state = await chartState(page, 'compare');
  assert.deepEqual(state.filled, [ui.step.length, staged.step.length]);
  assert.ok(state.x[0] > 0 && state.x[0] < 0.1, `the first step is early in epoch 1: ${state.x[0]}`);
  assert.equal(state.x[state.x.length - 1], 20, 'the last step of the 20-epoch run ends epoch 20');
  assert.ok(page.url().includes('by=epoch'), page.url());
  await shot(page, 'compare');
});

test('stage boundaries are drawn with the stage names', async () => {
  const curves = (await call('GET', `/api/experiments/${ids.staged}/metrics?names=test/accuracy`)).body;
  const endOfWarmup = curves['test/accuracy'].step[curves['test/accuracy'].epoch.indexOf(4)];
  await go(page, `#/experiments/${ids.staged}`);
  await page.locator('figure[data-kind="loss"][data-points="360"]').waitFor();
  const strip = await page.locator('.stages').innerText();
  assert.ok(strip.includes('warmup') && strip.includes('main'), strip);
  assert.ok(strip.includes(`from step ${endOfWarmup + 1}`), strip);
  assert.deepEqual((await chartState(page, 'loss')).markers,
    [{x: 1, label: 'warmup'}, {x: endOfWarmup + 1, label: 'main'}]);
  assert.deepEqual((await chartState(page, 'accuracy')).markers, [{x: 1, label: 'warmup'}, {x: 4.5, label: 'main'}]);
  // The learning rate steps up where the second stage begins.
  const schedule = await chartState(page, 'schedule');
  assert.deepEqual(schedule.names, ['lr']);
  await shot(page, 'experiment-stages');
});

test('the SQL console shows rows, and refuses to write', async () => {
  const health = (await call('GET', '/api/health')).body;
  const link = page.locator('nav a[data-view="sql"]');
  if (!health.sql) {
    assert.equal(await link.isVisible(), false, 'hidden while the daemon has no SQL endpoint');
    return;
  }
  assert.equal(await link.isVisible(), true);
  await link.click();
  await page.locator('table.sql-result tbody tr').nth(2).waitFor();
  const table = await page.locator('table.sql-result').innerText();
  assert.ok(table.includes('ui-stages') && table.includes('blocker'), table);
  assert.match(await page.locator('.sql-status').innerText(), /^3 rows/);
  await shot(page, 'sql');
  await page.locator('textarea[name=sql]').fill('DELETE FROM experiments');
  await page.locator('form.sql-form button[type=submit]').click();
  await page.locator('.sql-status.error').waitFor();
  assert.match(await page.locator('.sql-status').innerText(), /not allowed/);
  assert.equal((await call('GET', '/api/experiments')).body.experiments.length, 3);
});

test('a curve of 100,000 points takes one redraw per frame and stays fast', async () => {
  await go(page, '#/submit');
  // 2,000 points a frame into four series until there are 100,000: each frame's time covers
  // the appends and uPlot drawing everything so far (it draws in a microtask after setData).
  const result = await page.evaluate(async () => {
    const {LiveChart} = await import('/js/charts.js');
    const host = document.createElement('div');
    host.style.width = '900px';
    document.querySelector('main').append(host);
    const chart = new LiveChart(host, {title: 'bench', kind: 'bench'});
    const frameTimes = [];
    let step = 0;
    let previous = null;
    await new Promise((resolve) => {
      const frame = (now) => {
        if (previous !== null) frameTimes.push(now - previous);
        previous = now;
        for (let i = 0; i < 2000; i++) {
          step++;
          const total = 2.3 * Math.exp(-step / 20000) + 0.05 * Math.sin(step);
          chart.addRow(step, [['loss/total', total], ['loss/task', total * 0.7], ['loss/distill', total * 0.2],
            ['loss/feature', total * 0.1]]);
        }
        if (step < 100000) requestAnimationFrame(frame);
        else requestAnimationFrame(() => requestAnimationFrame(resolve));
      };
      requestAnimationFrame(frame);
    });
    const flushes = chart.flushes;
    const drawn = chart.plot.data[0].length;
    const late = frameTimes.slice(-10).sort((a, b) => a - b); // the frames with 80,000 points and more
    chart.destroy();
    host.remove();
    return {drawn, frames: frameTimes.length + 1, flushes, median: late[late.length >> 1], worst: late[late.length - 1]};
  });
  console.log(`100,000 points: ${result.flushes} redraws in ${result.frames} frames; with 80,000+ points a frame ` +
    `takes ${result.median.toFixed(1)} ms (median), ${result.worst.toFixed(1)} ms at worst`);
  assert.equal(result.drawn, 100000);
  assert.ok(result.flushes <= result.frames + 1, 'at most one redraw per frame');
  assert.ok(result.median < 100, `a frame with 80,000+ points took ${result.median.toFixed(1)} ms (median)`);
});

test('phone width and dark theme', async () => {
  await page.setViewportSize({width: 390, height: 844});
  await page.emulateMedia({colorScheme: 'dark'});
  for (const [hash, name] of [['#/experiments', 'experiments-phone-dark'],
    [`#/experiments/${ids.staged}`, 'experiment-phone-dark'], ['#/submit', 'submit-phone-dark']]) {
    await go(page, hash);
    await page.locator('main .view > *').first().waitFor();
    if (name === 'experiment-phone-dark') await page.locator('figure[data-kind="loss"][data-points="360"]').waitFor();
    if (name === 'experiments-phone-dark') await page.locator(`tr[data-id="${ids.ui}"]`).waitFor();
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `${hash} fits a phone: ${width}px wide`);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, 'rgb(18, 21, 27)', 'the dark theme');
    await shot(page, name);
  }
  await page.emulateMedia({colorScheme: 'light'});
  await page.setViewportSize({width: 1280, height: 900});
});

test('no page errors and no console errors', () => {
  assert.deepEqual(problems, []);
});

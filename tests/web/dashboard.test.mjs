// dashboard.test.mjs — the dashboard in real headless Chromium (Debian's, driven by
// playwright-core) against a real mapsaged that tests/test_web.py starts with a temporary
// database and hands over as MAPSAGE_URL. The tests run in order and share the daemon's
// experiments: a long "blocker" run, a student that waits for it, the "ui" run submitted from
// the form, a two-stage run and a student of "ui". A distillation run with every curve the
// dashboard draws is a fixture served to the page (the synthetic worker does not report
// those curves). Every page is kept as a screenshot in MAPSAGE_ARTIFACTS (the build's
// artifacts/).
//
// Run alone: MAPSAGE_URL=http://127.0.0.1:8787 node --test-reporter=spec tests/web/dashboard.test.mjs
// Node 18.15 or later (node:test with --test-reporter): Debian 12's own nodejs (18.20) will do.

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {BASE, CHROMIUM, call, go, openBrowser, shot, submit, waitStatus, watch} from './common.mjs';

// Which node ran the tests, in the log: it is the one package.json's engines must accept.
console.log(`node ${process.version} (${process.execPath}), chromium ${CHROMIUM}`);

const MODEL = {layers: [{type: 'linear', out: 32}, {type: 'relu'}, {type: 'linear', out: 10}]};
const UI = {name: 'ui', dataset: {name: 'synthetic', train_size: 4096}, model: MODEL, epochs: 20};
const STAGED = {name: 'ui-stages', dataset: {name: 'synthetic', train_size: 4096}, model: MODEL,
  stages: [{name: 'warmup', epochs: 4, lr: 0.01}, {name: 'main', epochs: 8}]};
const BLOCKER = {name: 'blocker', dataset: {name: 'synthetic', train_size: 4096}, model: MODEL, epochs: 3000};
const studentOf = (teacher, name) => ({name, dataset: {name: 'synthetic', train_size: 4096}, model: MODEL,
  teacher: {experiment: teacher}, stages: [{epochs: 1, distill_weight: 0.5, task_weight: 0.5}]});
const BAD = `{
  "name": "bad",
  "dataset": {"name": "synthetic"},
  "model": {"layers": [{"type": "linear", "out": 7}]},
  "epochs": 0
}
`;

let browser;
let context;
let page;
const problems = []; // page errors and console errors, checked at the end
const ids = {};

// --- helpers -----------------------------------------------------------------------------

// The values of an experiment's `eval` event with split "teacher", read from its stream.
async function teacherEvaluation(id) {
  const controller = new AbortController();
  const response = await fetch(`${BASE}/api/experiments/${id}/stream`, {signal: controller.signal});
  const decoder = new TextDecoder();
  let text = '';
  try {
    for await (const chunk of response.body) {
      text += decoder.decode(chunk, {stream: true});
      const match = /event: eval\ndata: (\{[^\n]*"split":"teacher"[^\n]*\})\n/.exec(text);
      if (match) return JSON.parse(match[1]).values;
      if (/event: (metric|end)\n/.test(text)) return null;
    }
  } finally {
    controller.abort();
  }
  return null;
}

// What a chart holds, read from the LiveChart behind a <figure data-kind=…>.
function chartState(p, kind) {
  return p.$eval(`figure[data-kind="${kind}"]`, (figure) => {
    const chart = figure.liveChart;
    return {x: chart.x, names: chart.names, filled: chart.columns.map((c) => c.filter((v) => v != null).length),
      markers: chart.options.markers().map(({x, label}) => ({x, label})), flushes: chart.flushes};
  });
}

// --- a distillation run, as the API would tell it ----------------------------------------
//
// The synthetic worker reports no distillation curves, stage starts or checkpoints yet, so
// the charts they feed are checked against this fixture, served in place of the daemon's
// answers for experiment 90001 (and its teacher, 90000). Six epochs of 40 steps in two
// stages ("soft", then "hard", where the adversarial term joins); the feature term swamps the
// others. The history holds the first stage; the stream brings the rest live: the second
// stage's start, its points, the end.

const FIXTURE = {id: 90001, teacher: 90000, perEpoch: 40, epochs: 6, cut: 120,
  classes: ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
  teacherAccuracy: 0.905, teacherLoss: 0.271};

function distillationFixture() {
  const {perEpoch, epochs, classes, cut} = FIXTURE;
  let seed = 7;
  const noise = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5);
  const events = []; // [{id, type, data}] in stream order
  events.push({id: '0.4', type: 'eval', data: {step: 0, epoch: 1, stage: 0, split: 'teacher',
    values: {'test/accuracy': FIXTURE.teacherAccuracy, 'test/loss': FIXTURE.teacherLoss}}});
  const stageStarts = [{stage: 0, name: 'soft', epoch: 1, step: 0}, {stage: 1, name: 'hard', epoch: 4, step: 120}];
  events.push({id: '0.5', type: 'stage', data: {step: 0, epoch: 1, stage: 0, name: 'soft'}});
  const total = epochs * perEpoch;
  for (let step = 1; step <= total; step++) {
    const epoch = Math.ceil(step / perEpoch);
    const stage = epoch <= 3 ? 0 : 1;
    const t = step / total;
    const task = 2.3 * Math.exp(-3 * t) + 0.3 + 0.05 * noise();
    const distill = 1.4 * Math.exp(-2 * t) + 0.2 + 0.04 * noise();
    const feature = 9 * Math.exp(-2.5 * t) + 1.5 + 0.2 * noise();
    const weights = stage === 0 ? {task: 0.3, distill: 0.7, feature: 0.5} : {task: 0.5, distill: 0.4, feature: 0.3,
      adversarial: 0.1};
    const raw = {task, distill, feature};
    if (stage === 1) raw.adversarial = 0.7 + 0.05 * noise();
    const values = {};
    let sum = 0;
    for (const [term, value] of Object.entries(raw)) {
      values[`loss/${term}`] = value;
      values[`weighted/${term}`] = value * weights[term];
      sum += value * weights[term];
    }
    values['loss/total'] = sum;
    values.lr = 0.05 * 0.5 * (1 + Math.cos(Math.PI * t));
    values.temperature = 4 - 3 * t;
    values.examples_per_s = 52000 + 6000 * noise();
    values['gate/mean'] = 1 + 0.05 * noise();
    values['gate/effective_fraction'] = 0.85 - 0.2 * t + 0.02 * noise();
    values['feature/ungated_mse'] = 2 * Math.exp(-2 * t) + 0.3 + 0.03 * noise();
    if (stage === 1) {
      values['disc/accuracy'] = 0.72 - 0.15 * (t - 0.5) + 0.04 * noise();
      values['disc/loss'] = 0.21 + 0.02 * noise();
    }
    if (step % 10 === 0 || step === 1) {
      values['grad_norm/fc1'] = 1.2 * Math.exp(-t) + 0.1 * noise() + 0.3;
      values['grad_norm/logits'] = 0.6 * Math.exp(-t) + 0.05 * noise() + 0.1;
      values['grad_norm/total'] = values['grad_norm/fc1'] + values['grad_norm/logits'];
      // What the worker says of each term's own gradient (grad_norm_every steps).
      values['grad_norm_term/task'] = 0.9 * Math.exp(-t) + 0.2;
      values['grad_norm_term/distill'] = 1.4 * Math.exp(-t) + 0.3;
      values['grad_share/task'] = 0.55 + 0.1 * t;
      values['grad_share/distill'] = 1 - values['grad_share/task'];
      values['grad_cos/task_distill'] = 0.4 - 0.6 * t;
    }
    events.push({id: String(step), type: 'metric', data: {step, epoch, stage, values}});
    if (step % perEpoch === 0) {
      const accuracy = 0.62 + 0.25 * (1 - Math.exp(-3 * t));
      const split = (n, name, value) => events.push({id: `${step}.${n}`, type: 'eval',
        data: {step, epoch, stage, split: name, values: value}});
      split(1, 'train', {accuracy: accuracy + 0.03, loss: task - 0.1});
      split(2, 'val', {accuracy: accuracy + 0.005, loss: task + 0.05});
      const test = {accuracy, loss: task + 0.07, agreement: 0.7 + 0.22 * (1 - Math.exp(-3 * t))};
      classes.forEach((name, i) => {
        test[`accuracy/${name}`] = Math.min(0.99, accuracy + [0.02, 0.1, -0.08, 0.04, -0.1, 0.09, -0.25, 0.08, 0.1,
          0.07][i]);
      });
      split(3, 'test', test);
    }
    if (step === cut) events.push({id: `${cut}.5`, type: 'stage', data: {step: cut, epoch: 4, stage: 1, name: 'hard'}});
  }
  // The history: every point up to the cut (`GET …/metrics` holds no stage events).
  const curves = {};
  const put = (name, step, value, epoch) => {
    if (!curves[name]) curves[name] = epoch == null ? {step: [], value: []} : {step: [], epoch: [], value: []};
    const curve = curves[name];
    curve.step.push(step);
    if (epoch != null) curve.epoch.push(epoch);
    curve.value.push(value);
  };
  const cutIndex = events.findIndex((e) => e.id === `${cut}.3`);
  for (const {type, data} of events.slice(0, cutIndex + 1)) {
    if (type === 'metric') for (const [name, value] of Object.entries(data.values)) put(name, data.step, value);
    if (type === 'eval') {
      for (const [name, value] of Object.entries(data.values)) {
        put(`${data.split}/${name}`, data.step, value, data.epoch);
      }
    }
  }
  const series = [...new Set(events.flatMap(({type, data}) => (type === 'metric' ? Object.keys(data.values)
    : type === 'eval' ? Object.keys(data.values).map((n) => `${data.split}/${n}`) : [])))].sort();
  const checkpoint = (epoch) => ({epoch, step: epoch * perEpoch,
    path: `/var/lib/mapsage/runs/90001/epoch-${epoch}.ckpt`, bytes: 1590124 + epoch,
    created_at: new Date(Date.now() - (epochs - epoch) * 60000).toISOString()});
  const config = {name: 'kd-fixture', teacher: {experiment: FIXTURE.teacher}, checkpoint_every: 1,
    stages: [{name: 'soft', epochs: 3}, {name: 'hard', epochs: 3}]};
  const row = (final) => ({id: FIXTURE.id, name: 'kd-fixture', status: final ? 'succeeded' : 'running', priority: 0,
    created_at: new Date(Date.now() - 600000).toISOString(), started_at: new Date(Date.now() - 590000).toISOString(),
    finished_at: final ? new Date().toISOString() : null, attempts: 1, error: null, teacher: FIXTURE.teacher,
    progress: final ? {epoch: 6, epochs: 6, step: total, stage: 1, stages: 2}
      : {epoch: 4, epochs: 6, step: cut, stage: 0, stages: 2},
    summary: final ? {final_test_accuracy: events.filter((e) => e.data.split === 'test').at(-1).data.values.accuracy,
      best_val_accuracy: 0.87, best_val_epoch: 6, final_test_loss: 0.41, examples_per_s: 52000} : null,
    config, worker: {pid: 1, host: 'fixture', threads: 1},
    stages: final ? stageStarts : stageStarts.slice(0, 1),
    series: final ? series : series.filter((n) => curves[n]),
    checkpoints: Array.from({length: final ? epochs : 3}, (_, i) => checkpoint(i + 1))});
  const sse = ({id, type, data}) => `${id ? `id: ${id}\n` : ''}event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
  const stream = sse({type: 'status', data: {id: FIXTURE.id, status: 'running', error: null, attempts: 1}}) +
    events.slice(cutIndex + 1).map(sse).join('') + sse({type: 'end', data: {status: 'succeeded', error: null}});
  return {events, curves, series, row, stream, stageStarts, total};
}

// Serves the fixture to page `p`: the details, the history, the log, the stream. Returns
// what the page asked for.
async function serveFixture(p) {
  const fixture = distillationFixture();
  const asked = {streams: [], details: 0};
  let streamed = false;
  const json = (route, body) => route.fulfill({status: 200, contentType: 'application/json',
    body: JSON.stringify(body)});
  await p.route(/\/api\/experiments\/9000[01](\/|\?|$)/, (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === `/api/experiments/${FIXTURE.teacher}`) {
      return json(route, {id: FIXTURE.teacher, name: 'teacher-cnn', status: 'succeeded', teacher: null});
    }
    if (url.pathname.endsWith('/metrics')) return json(route, fixture.curves);
    if (url.pathname.endsWith('/log')) {
      return route.fulfill({status: 200, contentType: 'text/plain', body: 'attempt 1 | a fixture: no worker ran\n'});
    }
    if (url.pathname.endsWith('/stream')) {
      asked.streams.push(url.search);
      streamed = true;
      return route.fulfill({status: 200, contentType: 'text/event-stream', body: fixture.stream});
    }
    asked.details++;
    return json(route, fixture.row(streamed));
  });
  return {fixture, asked};
}

// --- setup -------------------------------------------------------------------------------

before(async () => {
  browser = await openBrowser();
  context = browser.context;
  page = watch(context.pages()[0] || await context.newPage(), problems);
});

after(async () => {
  if (browser) await browser.close();
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
  assert.equal(await row.locator('td.teacher').innerText(), '—', 'no teacher');

  // A student of the running blocker waits for it, and says so.
  ids.waiting = await submit(studentOf(ids.blocker, 'waits-for-blocker'));
  const student = page.locator(`tr[data-id="${ids.waiting}"]`);
  await page.locator(`tr[data-id="${ids.waiting}"][data-status="queued"]`).waitFor();
  assert.equal(await student.locator('td.teacher').innerText(), `#${ids.blocker}`);
  assert.equal(await student.locator('td.teacher a').getAttribute('href'), `#/experiments/${ids.blocker}`);
  assert.equal(await student.locator('td.progress').innerText(), `waiting for #${ids.blocker}`);
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'the rows came by the stream, not a reload');
  await shot(page, 'experiments-waiting');
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
  const list = watch(await context.newPage(), problems);
  try {
    await go(list, '#/experiments');
    const cancel = list.locator(`tr[data-id="${ids.blocker}"] button[data-action="cancel"]`);
    await cancel.click();
    await list.locator(`tr[data-id="${ids.blocker}"] button[data-armed="yes"]`).waitFor();
    await cancel.click();
    await list.locator(`tr[data-id="${ids.blocker}"][data-status="cancelled"]`).waitFor();
    // Its student can no longer learn from it: the daemon fails it, and the list follows.
    await list.locator(`tr[data-id="${ids.waiting}"][data-status="failed"]`).waitFor();
    assert.match(await list.locator(`tr[data-id="${ids.waiting}"] .row-error`).innerText(), /teacher/);
    assert.equal(await list.locator(`tr[data-id="${ids.waiting}"] td.teacher`).innerText(), `#${ids.blocker}`);

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
  const {stages} = (await call('GET', `/api/experiments/${ids.staged}`)).body;
  await go(page, `#/experiments/${ids.staged}`);
  await page.locator('figure[data-kind="loss"][data-points="360"]').waitFor();
  const strip = await page.locator('.stages').innerText();
  assert.ok(strip.includes('warmup') && strip.includes('main'), strip);
  assert.ok(strip.includes(`from step ${endOfWarmup + 1}`), strip);
  if (stages.length) {
    // Where the daemon says each stage began (`step` steps before it), with its names.
    assert.deepEqual(stages.map((s) => s.name), ['warmup', 'main']);
    assert.deepEqual(stages.map((s) => s.step), [0, endOfWarmup]);
    assert.deepEqual((await chartState(page, 'loss')).markers, stages.map((s) => ({x: s.step + 1, label: s.name})));
    assert.deepEqual((await chartState(page, 'accuracy')).markers,
      stages.map((s) => ({x: s.stage ? s.epoch - 0.5 : s.epoch, label: s.name})));
  } else {
    // TODO: the worker does not report stage starts yet; the page works them out from the
    // evaluations (as for a run recorded before the daemon kept them). The fixture below
    // checks markers that come from the API and from live `stage` events.
    console.log('note: the daemon recorded no stage starts for a two-stage run; checked the derived markers');
  }
  assert.deepEqual((await chartState(page, 'loss')).markers,
    [{x: 1, label: 'warmup'}, {x: endOfWarmup + 1, label: 'main'}]);
  assert.deepEqual((await chartState(page, 'accuracy')).markers, [{x: 1, label: 'warmup'}, {x: 4.5, label: 'main'}]);
  // The learning rate steps up where the second stage begins.
  const schedule = await chartState(page, 'schedule');
  assert.deepEqual(schedule.names, ['lr']);
  await shot(page, 'experiment-stages');
});

test('the checkpoints section lists what the API lists', async () => {
  const {checkpoints, status} = (await call('GET', `/api/experiments/${ids.ui}`)).body;
  assert.equal(status, 'succeeded');
  await go(page, `#/experiments/${ids.ui}`);
  const panel = page.locator('details[data-panel="checkpoints"]');
  await panel.locator('.checkpoints > *').first().waitFor();
  if (checkpoints.length === 0) {
    // TODO: the synthetic worker writes no checkpoints yet; then the section says so.
    assert.equal(await panel.locator('.checkpoints').innerText(), 'This run left no checkpoint.');
    assert.equal(await panel.locator('summary .count').innerText(), '');
    console.log('note: the daemon listed no checkpoints for a finished run; checked the empty state');
    return;
  }
  // Newest first (where a run would resume).
  const expected = [...checkpoints].sort((a, b) => b.epoch - a.epoch);
  const rows = await panel.locator('table.checkpoints tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.innerText)));
  assert.deepEqual(rows.map((cells) => [cells[0], cells[1], cells[4]]), expected.map((c, i) =>
    [`${c.epoch}${i === 0 && expected.length > 1 ? ' newest' : ''}`, c.step.toLocaleString('en-US'), c.path]));
  assert.equal(await panel.locator('summary .count').innerText(), `(${checkpoints.length})`);
});

test('a student shows its teacher in the list and on its page', async () => {
  ids.student = await submit(studentOf(ids.ui, 'student-of-ui'));
  await go(page, '#/experiments');
  const row = page.locator(`tr[data-id="${ids.student}"]`);
  await row.waitFor();
  assert.equal(await row.locator('td.teacher').innerText(), `#${ids.ui}`);
  assert.equal(await row.locator('td.teacher a').getAttribute('title'), `learns from #${ids.ui} ui`);
  // Its teacher has succeeded: whatever becomes of the student now is the worker's doing
  // (it needs the teacher's checkpoint). Take the state it ends in, as the daemon says it.
  const final = await waitStatus(ids.student, ['succeeded', 'failed']);
  await page.locator(`tr[data-id="${ids.student}"][data-status="${final.status}"]`).waitFor();
  assert.notEqual(await row.locator('td.progress').innerText(), `waiting for #${ids.ui}`);
  await shot(page, 'experiments-student');

  await go(page, `#/experiments/${ids.student}`);
  const line = page.locator('.run-header .teacher-line');
  await line.locator('.status').waitFor();
  assert.equal(await line.locator('a').getAttribute('href'), `#/experiments/${ids.ui}`);
  assert.match(await line.innerText(), new RegExp(`^learns from #${ids.ui} ui succeeded$`));
  if (final.status === 'failed') {
    await page.locator('p.error').filter({hasText: final.error}).waitFor();
    console.log(`note: the student of a finished run ${final.status}: ${final.error}`);
  }
  if (final.series.includes('teacher/test/accuracy')) {
    // The teacher's evaluation, as the stream tells it from the start (event "0.4").
    const teacher = (await teacherEvaluation(ids.student))['test/accuracy'];
    await page.locator('figure[data-kind="accuracy"]:not([data-points="0"])').waitFor();
    const references = await page.$eval('figure[data-kind="accuracy"]', (f) => f.liveChart.options.references());
    assert.deepEqual(references.map((r) => r.y), [teacher], 'the teacher line, though the run was opened after it');
    assert.match(await page.locator('.figure[data-figure="teacher"]').innerText(), /%/);
  }
  await shot(page, 'experiment-student');
});

test('a distillation run: every term, the teacher line, per-class accuracy, diagnostics (fixture)', async () => {
  const {fixture, asked} = await serveFixture(page);
  try {
    await go(page, `#/experiments/${FIXTURE.id}`);
    await page.locator('.run-header h1 .status[data-status="succeeded"]').waitFor();
    await page.locator(`figure[data-kind="loss"][data-points="${fixture.total}"]`).waitFor();
    await page.locator('table.checkpoints tbody tr').nth(FIXTURE.epochs - 1).waitFor(); // read again at the end
    assert.deepEqual(asked.streams, [`?last_event_id=${FIXTURE.cut}.3`], 'resumed after the stored history');

    // Raw and weighted terms, in the formula's order; the weighted ones stacked up to loss/total.
    const terms = ['task', 'distill', 'feature', 'adversarial'];
    assert.deepEqual((await chartState(page, 'loss')).names, ['loss/total', ...terms.map((t) => `loss/${t}`)]);
    const weighted = await page.$eval('figure[data-kind="weighted"]', (figure) => {
      const chart = figure.liveChart;
      const total = chart.columns[chart.names.indexOf('loss/total')];
      const top = chart.sums[chart.names.length - 1];
      // Steps where the top edge is not the total: [x, total, top].
      const off = chart.x.map((x, i) => [x, total[i], top[i]]).filter(([, t, sum]) => !(Math.abs(t - sum) < 1e-9));
      return {names: chart.names, off: off.slice(0, 3), legend: figure.querySelector('.u-legend').innerText};
    });
    assert.deepEqual(weighted.names, ['loss/total', ...terms.map((t) => `weighted/${t}`)]);
    assert.deepEqual(weighted.off, [], 'the top of the stack is loss/total at every step');
    assert.match(weighted.legend, /weighted\/feature:?\s*[\d.]+ \(\d+%\)/, weighted.legend);

    // The teacher's test accuracy and loss: reference lines, inside the y range.
    const accuracy = await page.$eval('figure[data-kind="accuracy"]', (figure) => ({
      names: figure.liveChart.names, references: figure.liveChart.options.references(),
      max: figure.liveChart.plot.scales.y.max}));
    assert.deepEqual(accuracy.names, ['train/accuracy', 'val/accuracy', 'test/accuracy']);
    assert.deepEqual(accuracy.references.map((r) => [r.y, r.label]),
      [[FIXTURE.teacherAccuracy, 'teacher test accuracy 90.5%']]);
    assert.ok(accuracy.max >= FIXTURE.teacherAccuracy, `y reaches the teacher's line: ${accuracy.max}`);
    const evalLoss = await page.$eval('figure[data-kind="eval-loss"]', (f) => f.liveChart.options.references());
    assert.deepEqual(evalLoss.map((r) => r.y), [FIXTURE.teacherLoss]);
    assert.match(await page.locator('.figure[data-figure="teacher"]').innerText(), /90\.50%/);
    assert.match(await page.locator('.run-header .teacher-line').innerText(),
      /^learns from #90000 teacher-cnn succeeded$/);

    // Per-class accuracy at the newest epoch; the weakest class stands out.
    const bars = page.locator(`figure[data-kind="per-class"][data-epoch="${FIXTURE.epochs}"]`);
    await bars.waitFor();
    assert.equal(await bars.getAttribute('data-classes'), String(FIXTURE.classes.length));
    assert.equal(await bars.locator('.class-row.worst').getAttribute('data-class'), 'Shirt');
    assert.ok(await bars.locator('.class-row[data-class="T-shirt/top"]').count(), 'a class name with a slash');

    // Agreement, the gate and the discriminator, temperature beside lr: charts of their own.
    assert.deepEqual((await chartState(page, 'agreement')).names, ['test/agreement']);
    assert.deepEqual((await chartState(page, 'gate')).names.sort(),
      ['feature/ungated_mse', 'gate/effective_fraction', 'gate/mean']);
    assert.deepEqual((await chartState(page, 'disc')).names.sort(), ['disc/accuracy', 'disc/loss']);
    assert.deepEqual((await chartState(page, 'schedule')).names.sort(), ['lr', 'temperature']);
    // Each term's share of the gradient, its cosine with the task's, its raw norm.
    assert.deepEqual((await chartState(page, 'grad-share')).names, ['grad_share/task', 'grad_share/distill']);
    assert.deepEqual((await chartState(page, 'grad-cosine')).names, ['grad_cos/task_distill']);
    assert.deepEqual((await chartState(page, 'grad-term')).names, ['grad_norm_term/task', 'grad_norm_term/distill']);
    assert.equal(await page.locator('figure[data-kind="diagnostics"], figure[data-kind="eval-other"]').count(), 0,
      'every curve has its chart');

    // Stage 1 from the details, stage 2 from the live `stage` event.
    assert.deepEqual((await chartState(page, 'loss')).markers,
      [{x: 1, label: 'soft'}, {x: FIXTURE.cut + 1, label: 'hard'}]);
    assert.deepEqual((await chartState(page, 'accuracy')).markers, [{x: 1, label: 'soft'}, {x: 3.5, label: 'hard'}]);
    assert.match(await page.locator('.stages').innerText(),
      new RegExp(`hard epochs 4–6 · from step ${FIXTURE.cut + 1}`));

    // The checkpoints, as the details list them once the run has ended.
    const rows = await page.locator('table.checkpoints tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.innerText)));
    assert.equal(rows.length, FIXTURE.epochs);
    assert.deepEqual(rows[0].slice(0, 3), ['6 newest', '240', '1.59 MB']);
    assert.deepEqual(rows[5].slice(0, 3), ['1', '40', '1.59 MB']);
    assert.equal(rows[0][4], '/var/lib/mapsage/runs/90001/epoch-6.ckpt');
    await shot(page, 'experiment-distillation');

    await page.setViewportSize({width: 390, height: 844});
    await page.emulateMedia({colorScheme: 'dark'});
    await go(page, '#/experiments');
    await go(page, `#/experiments/${FIXTURE.id}`);
    await page.locator(`figure[data-kind="loss"][data-points="${fixture.total}"]`).waitFor();
    await page.locator('table.checkpoints tbody tr').nth(FIXTURE.epochs - 1).waitFor();
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `fits a phone: ${width}px wide`);
    await shot(page, 'experiment-distillation-phone-dark');
  } finally {
    await page.emulateMedia({colorScheme: 'light'});
    await page.setViewportSize({width: 1280, height: 900});
    await page.unrouteAll();
  }
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
  await page.locator('table.sql-result tbody tr').nth(Object.keys(ids).length - 1).waitFor();
  const table = await page.locator('table.sql-result').innerText();
  assert.ok(table.includes('ui-stages') && table.includes('blocker'), table);
  const count = (await call('GET', '/api/experiments')).body.experiments.length;
  assert.equal(count, Object.keys(ids).length, 'every experiment the tests submitted');
  assert.match(await page.locator('.sql-status').innerText(), new RegExp(`^${count} rows`));
  await shot(page, 'sql');
  await page.locator('textarea[name=sql]').fill('DELETE FROM experiments');
  await page.locator('form.sql-form button[type=submit]').click();
  await page.locator('.sql-status.error').waitFor();
  assert.match(await page.locator('.sql-status').innerText(), /not allowed/);
  assert.equal((await call('GET', '/api/experiments')).body.experiments.length, Object.keys(ids).length);
});

test('a curve of 100,000 points takes one redraw per frame', async () => {
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
  // The frame time is printed, not asserted: the suite runs on a busy 2-core machine, where a
  // figure in milliseconds says more about the neighbours than about the chart.
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

// studies.test.mjs — the dashboard's study views in real headless Chromium (Debian's, driven
// by playwright-core) against a real mapsaged that tests/test_web.py starts for this file
// alone (a temporary database, two workers) and hands over as MAPSAGE_URL. The tests run in
// order: a small distillation study (a teacher the study trains, two arms, three seeds,
// their matched baselines), then 200-run studies for the page's speed, its live updates and
// cancelling. Every page is kept as a screenshot in MAPSAGE_ARTIFACTS (the build's
// artifacts/).
//
// Run alone: MAPSAGE_URL=http://127.0.0.1:8787 node --test-reporter=spec tests/web/studies.test.mjs
// (against a daemon with an empty database and two workers).

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {BASE, CHROMIUM, call, go, openBrowser, shot, watch} from './common.mjs';


const DATA = {name: 'synthetic', train_size: 512};
const STUDENT = {layers: [{type: 'linear', out: 32}, {type: 'relu'}, {type: 'linear', out: 10}]};
const TEACHER = {layers: [{type: 'linear', out: 64}, {type: 'relu'}, {type: 'linear', out: 10}]};
// Two distilling arms, one matched baseline for both (their baselines come out the same):
// 1 teacher + 2 × 3 arm runs + 3 baseline runs.
const STUDY = {
  name: 'ui-study', description: 'Does a soft or a hard mix of distillation beat training alone?',
  base: {dataset: DATA, model: STUDENT, stages: [{epochs: 3}]},
  teacher: {config: {name: 'ui-teacher', dataset: DATA, model: TEACHER, epochs: 3}},
  arms: {'kd-soft': {stages: [{epochs: 3, distill_weight: 0.7, task_weight: 0.3}]},
    'kd-hard': {stages: [{epochs: 3, distill_weight: 0.3, task_weight: 0.7}]}},
  seeds: 3,
};
// 1 arm × a grid of 2 × 2 cells × 50 seeds = 200 one-epoch runs, no teacher. The arm is named:
// a study without "arms" stores its runs under a garbled arm name (a daemon bug, reported).
const LARGE = (name) => ({
  name, description: 'Learning rate × batch size, 50 seeds each',
  base: {dataset: {name: 'synthetic', train_size: 256}, model: {layers: [{type: 'linear', out: 16}, {type: 'relu'},
    {type: 'linear', out: 10}]}, epochs: 1},
  arms: {sgd: {}},
  grid: {'optimizer.lr': [0.02, 0.1], batch_size: [32, 128]},
  seeds: 50,
});
const ENDED = ['succeeded', 'failed', 'cancelled'];

let browser;
let context;
let page;
const problems = [];
const ids = {};

// --- helpers -----------------------------------------------------------------------------

async function waitStudy(id, statuses, timeout = 180000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const {body} = await call('GET', `/api/studies/${id}`);
    const active = ['queued', 'running', 'interrupted'].some((s) => body.counts[s]);
    if (statuses.includes(body.status) && !active) return body;
    if (Date.now() > deadline) throw new Error(`study ${id} still ${body.status} ${JSON.stringify(body.counts)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// The p-value as the page writes it.
function formatP(p) {
  return p < 0.001 ? '< 0.001' : String(+p.toPrecision(2));
}

// How many pixels of a chart's canvas are `color` ("#4e79a7"), give or take antialiasing.
function pixelsOf(p, kind, color) {
  return p.$eval(`figure[data-kind="${kind}"] canvas`, (canvas, hex) => {
    const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 240 && Math.abs(data[i] - want[0]) + Math.abs(data[i + 1] - want[1]) +
        Math.abs(data[i + 2] - want[2]) < 24) count++;
    }
    return count;
  }, color);
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

test('the studies list shows a study submitted over the API and follows it to its end', {timeout: 200000},
  async () => {
    await go(page, '#/studies');
    await page.getByText('No studies yet').waitFor();
    await page.locator('#live.on').waitFor(); // the list follows /api/events
    assert.equal(await page.locator('#live .live-text').innerText(), 'live', 'said in words, not only in colour');
    assert.equal(await page.locator('nav a[data-view="studies"]').getAttribute('aria-current'), 'page');
    assert.equal(await page.locator('nav a[aria-current]').count(), 1);

    const dry = await call('POST', '/api/studies?dry_run=1', STUDY);
    assert.equal(dry.status, 200, JSON.stringify(dry.body));
    assert.equal(dry.body.count, 10, 'a teacher, 2 arms × 3 seeds and 3 shared baselines');
    const created = await call('POST', '/api/studies', STUDY);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    ids.small = created.body.id;

    const row = page.locator(`table.studies tr[data-id="${ids.small}"]`);
    await row.waitFor(); // by the stream: the page was not reloaded
    assert.equal(await row.locator('td.name a').first().innerText(), 'ui-study');
    await page.locator(`table.studies tr[data-id="${ids.small}"][data-status="succeeded"]`).waitFor({timeout: 180000});
    await page.waitForFunction((id) => /^10\/10 done/.test(
      document.querySelector(`tr[data-id="${id}"] .progress-text`).textContent), ids.small);
    assert.equal(await row.locator('[role=progressbar]').getAttribute('aria-valuenow'), '10');
    await shot(page, 'studies');

    // Keyboard focus is visible: the first link after the header's.
    await page.locator(`tr[data-id="${ids.small}"] td.id a`).focus();
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Tab');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.equal(outline, 'solid', 'a focused link shows a ring');
  });

test('the study page: each arm, the comparisons with p, the forest plot, the curves drawn, every run',
  async () => {
    const study = (await call('GET', `/api/studies/${ids.small}`)).body;
    assert.equal(study.status, 'succeeded', JSON.stringify(study.counts));
    await page.locator(`table.studies tr[data-id="${ids.small}"] td.name a`).first().click();
    await page.waitForURL(new RegExp(`#/studies/${ids.small}$`));
    const view = page.locator('.view[data-state="loaded"][data-curves="drawn"]');
    await view.waitFor();
    assert.equal(await page.locator('nav a[data-view="studies"]').getAttribute('aria-current'), 'true');
    assert.match(await page.locator('.study-header h1').innerText(), /ui-study\s+succeeded/);
    assert.equal(await page.locator('.study-header .description').innerText(), STUDY.description);
    assert.match(await page.locator('.study-header .progress-text').innerText(), /^10\/10 done/);

    // Every arm row, in the API's order: teacher, then each arm followed by its baseline.
    const arms = await page.locator('table.arms tbody tr').evaluateAll((trs) =>
      trs.map((tr) => ({arm: tr.dataset.arm, role: tr.dataset.role, n: tr.querySelector('td.n').innerText,
        p: (tr.querySelector('td.p') || {}).innerText || '', test: tr.querySelector('[data-outcome=test_accuracy]')
          .innerText})));
    assert.deepEqual(arms.map((a) => [a.arm, a.role]), study.arms.map((a) => [a.name, a.role]));
    assert.deepEqual(arms.map((a) => a.arm), ['teacher', 'kd-soft', 'kd-soft/baseline', 'kd-hard', 'kd-hard/baseline']);
    for (const [i, arm] of study.arms.entries()) {
      const summary = arm.outcomes.test_accuracy;
      assert.ok(arms[i].n.startsWith(String(summary.n)), `${arm.name}: n ${arms[i].n}`);
      assert.ok(arms[i].test.startsWith(`${(summary.mean * 100).toFixed(1)}%`), `${arm.name}: ${arms[i].test}`);
    }

    // Each distilling arm's comparison on test accuracy: its Holm-adjusted p, "significant"
    // below 0.05, "unmatched" (and no p) when the sides trained different step counts.
    const comparisons = study.comparisons.filter((c) => c.outcome === 'test_accuracy');
    assert.equal(comparisons.length, 2);
    for (const c of comparisons) {
      const row = page.locator(`table.arms tbody tr[data-arm="${c.arm}"][data-role="arm"]`);
      if (!c.matched) {
        assert.equal(await row.locator('td.p .unmatched').textContent(), 'unmatched');
        assert.equal(await row.locator('td.p .p-value').count(), 0, 'no p for an unmatched comparison');
        continue;
      }
      assert.ok(c.p_holm != null, JSON.stringify(c));
      assert.equal(await row.locator('td.p .p-value').innerText(), formatP(c.p_holm));
      assert.equal(await row.locator('td.p .flag.significant').count(), c.p_holm < 0.05 ? 1 : 0);
      assert.match(await row.locator('td.delta').innerText(), /^[+−]?\d+\.\d \[[+−]?\d+\.\d, [+−]?\d+\.\d\]$/);
    }
    for (const role of ['baseline', 'teacher']) {
      assert.equal(await page.locator(`table.arms tbody tr[data-role="${role}"] td.p .p-value`).count(), 0);
    }

    // The forest plot: one mark per distilling arm, around a zero line.
    const marks = await page.locator('svg.forest g.mark').evaluateAll((gs) => gs.map((g) => g.dataset.key));
    assert.deepEqual(marks.map((key) => key.split(' ')[0]), comparisons.map((c) => c.arm));
    assert.equal(await page.locator('svg.forest line.zero').count(), 1);

    // Which term moves the student: a row per distilling arm, its shares as the API has them.
    const gradientRows = await page.locator('table.gradients tbody tr').evaluateAll((rows) =>
      rows.map((row) => row.dataset.arm));
    assert.deepEqual(gradientRows, comparisons.map((c) => c.arm));
    for (const arm of study.arms.filter((a) => a.gradients)) {
      const shown = await page.locator(`table.gradients tbody tr[data-arm="${arm.name}"] td`).first().innerText();
      assert.equal(shown, `${(100 * arm.gradients.share.task).toFixed(1)}%`);
    }

    // The curves: drawn, in each arm's colour (read back from the canvas), the shared
    // baseline once, dashed; the distillation loss for the distilling arms only.
    const drawn = await page.$eval('figure[data-kind="val/accuracy"]', (f) =>
      f.bandChart.series.map((s) => ({label: s.label, color: s.color, role: s.role, dashed: !!s.dashed})));
    assert.deepEqual(drawn.filter((s) => s.role === 'arm').map((s) => s.label), ['kd-soft', 'kd-hard']);
    assert.deepEqual(drawn.filter((s) => s.role === 'baseline').map((s) => [s.label, s.dashed]),
      [['baseline of kd-soft, kd-hard', true]]);
    for (const kind of ['val/accuracy', 'loss/task', 'loss/distill']) {
      const series = await page.$eval(`figure[data-kind="${kind}"]`, (f) => f.bandChart.series
        .filter((s) => s.role === 'arm').map((s) => s.color));
      assert.equal(series.length, 2, kind);
      for (const color of series) {
        const pixels = await pixelsOf(page, kind, color);
        assert.ok(pixels > 30, `${kind}: ${pixels} pixels of ${color}`);
      }
    }
    assert.deepEqual(await page.$eval('figure[data-kind="loss/distill"]', (f) =>
      f.bandChart.series.map((s) => s.role)), ['arm', 'arm']);

    // Every run once (a baseline shared by two arms is one run, naming both), linked.
    const distinct = [...new Set(study.runs.map((r) => r.id))];
    const runs = await page.locator('table.study-runs tbody tr').evaluateAll((trs) => trs.map((tr) => ({
      id: Number(tr.dataset.id), href: tr.querySelector('td.id a').getAttribute('href'),
      arm: tr.querySelector('td.arm').innerText, status: tr.dataset.status})));
    assert.deepEqual(runs.map((r) => r.id), distinct);
    for (const run of runs) {
      assert.equal(run.href, `#/experiments/${run.id}`);
      assert.equal(run.status, 'succeeded');
    }
    assert.deepEqual(runs.filter((r) => r.arm.includes('baseline')).map((r) => r.arm),
      ['kd-hard/baseline, kd-soft/baseline', 'kd-hard/baseline, kd-soft/baseline', 'kd-hard/baseline, kd-soft/baseline']);
    assert.equal(await page.locator('#live.on').count(), 0, 'an ended study: no stream left open');
    await shot(page, 'study');

    await page.setViewportSize({width: 390, height: 844});
    await page.emulateMedia({colorScheme: 'dark'});
    try {
      for (const [hash, name] of [['#/studies', 'studies-phone-dark'], [`#/studies/${ids.small}`, 'study-phone-dark']]) {
        await go(page, '#/experiments');
        await go(page, hash);
        await page.locator('main .view > *').first().waitFor();
        if (name === 'study-phone-dark') await view.waitFor();
        else await page.locator(`table.studies tr[data-id="${ids.small}"]`).waitFor();
        const width = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(width <= 390, `${hash} fits a phone: ${width}px wide`);
        await shot(page, name);
      }
    } finally {
      await page.emulateMedia({colorScheme: 'light'});
      await page.setViewportSize({width: 1280, height: 900});
    }
  });

test('a 200-run study: the page renders completely and follows it live, reading at most once a second',
  {timeout: 240000}, async () => {
    const spec = LARGE('ui-grid-200');
    const dry = await call('POST', '/api/studies?dry_run=1', spec);
    assert.equal(dry.status, 200, JSON.stringify(dry.body));
    assert.equal(dry.body.count, 200);

    const reads = [];
    const onRequest = (request) => {
      // This study's only: the page before it may still be reading its own (the theme just
      // changed back, which draws the view again).
      if (ids.large && new URL(request.url()).pathname === `/api/studies/${ids.large}`) reads.push(Date.now());
    };
    page.on('request', onRequest);
    try {
      const created = await call('POST', '/api/studies', spec);
      assert.equal(created.status, 201, JSON.stringify(created.body));
      ids.large = created.body.id;
      // From a blank page: the time covers loading the dashboard itself, not only the route.
      await page.goto('about:blank');
      const started = Date.now();
      await go(page, `#/studies/${ids.large}`);
      await page.waitForFunction(() => {
        const view = document.querySelector('.view');
        return view.dataset.curves === 'drawn' && document.querySelectorAll('table.study-runs tbody tr').length === 200 &&
          document.querySelectorAll('table.arms tbody tr').length === 4;
      });
      const rendered = Date.now() - started;
      console.log(`200-run study page: complete in ${rendered} ms from navigation (the dashboard loaded, the runs ` +
        'table, every arm row, the curves)');

      // Still running when drawn, it ends on the page by the stream alone.
      const statusesAtRender = await page.locator('table.study-runs tbody tr').evaluateAll((trs) =>
        trs.map((tr) => tr.dataset.status));
      await page.waitForFunction(() => document.querySelectorAll(
        'table.study-runs tbody tr[data-status="succeeded"]').length === 200, null, {timeout: 200000});
      await page.locator('.view[data-status="succeeded"]').waitFor();
      const ended = Date.now();
      await page.waitForTimeout(1500); // a read still due after the end
      const study = (await call('GET', `/api/studies/${ids.large}`)).body;
      const waiting = statusesAtRender.filter((s) => !ENDED.includes(s)).length;
      console.log(`200-run study: ${waiting} runs not yet ended when drawn; ${reads.length} reads of the study ` +
        `over ${((ended - started) / 1000).toFixed(1)} s`);
      // One read to start, then at most one a second while it ran (and one after its end);
      // how far apart, by the page's clock (the requests reach this process late, unevenly).
      assert.ok(reads.length <= 2 + Math.ceil((ended - started) / 1000), `${reads.length} reads`);
      const times = await page.evaluate(() => document.querySelector('.view').fetchTimes);
      assert.equal(times.length, reads.length, 'every read the page made is one request');
      for (let i = 1; i < times.length; i++) {
        assert.ok(times[i] - times[i - 1] >= 990, `reads ${i} and ${i + 1} ${times[i] - times[i - 1]} ms apart`);
      }

      // Every arm row (one per cell), the statistics once done, the heatmap of the two axes.
      const rows = await page.locator('table.arms tbody tr').evaluateAll((trs) => trs.map((tr) =>
        tr.querySelector('td.n').innerText));
      assert.deepEqual(rows, study.arms.map((arm) => String(arm.outcomes.test_accuracy.n)));
      assert.deepEqual(rows, ['50', '50', '50', '50']);
      // The curves were read again with the statistics: the legend's last validation accuracy
      // of each cell (one epoch: its best) is the arm table's.
      const legend = await page.locator('figure[data-kind="val/accuracy"] ul.band-legend .series-value')
        .evaluateAll((spans) => spans.map((span) => span.firstChild.textContent.split(' ')[0]));
      assert.deepEqual(legend, study.arms.map((arm) => `${(arm.outcomes.best_val_accuracy.mean * 100).toFixed(1)}%`));
      await page.locator('table.heatmap tbody td').nth(3).waitFor();
      assert.equal(await page.locator('table.heatmap tbody td').count(), 4);
      const best = study.grid[0].best.cell;
      const chosen = await page.locator('table.heatmap td.best').getAttribute('title');
      assert.ok(chosen.startsWith(`optimizer.lr = ${best['optimizer.lr']}, batch_size = ${best.batch_size}:`), chosen);
      assert.equal(await page.locator('svg.forest').count(), 0, 'no teacher, no comparison');
      await shot(page, 'study-200');
    } finally {
      page.off('request', onRequest);
    }
  });

test('cancelling a 200-run study from its page: two clicks, every run follows, a few reads', {timeout: 120000},
  async () => {
    const created = await call('POST', '/api/studies', LARGE('ui-grid-200-cancelled'));
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id;
    await go(page, `#/studies/${id}`);
    await page.waitForFunction(() => document.querySelectorAll('table.study-runs tbody tr').length === 200);
    await page.locator('#live.on').waitFor(); // following it
    const before = Number(await page.locator('.view').getAttribute('data-fetches'));
    const cancel = page.locator('.study-header button[data-action="cancel"]');
    await cancel.click();
    assert.equal(await cancel.innerText(), 'Really cancel every run?');
    assert.equal((await call('GET', `/api/studies/${id}`)).body.status !== 'cancelled', true, 'not on one click');
    const clicked = Date.now();
    await cancel.click();
    await page.locator('.view[data-status="cancelled"]').waitFor();
    await page.waitForFunction(() => !document.querySelector(
      'table.study-runs tbody tr:is([data-status="queued"], [data-status="running"])'));
    await page.waitForTimeout(1500);
    const after = Number(await page.locator('.view').getAttribute('data-fetches'));
    const study = await waitStudy(id, ['cancelled']);
    const cancelled = study.runs.filter((r) => r.status === 'cancelled').length;
    console.log(`cancelled ${cancelled} of 200 runs: ${after - before} reads of the study in ` +
      `${((Date.now() - clicked) / 1000).toFixed(1)} s`);
    assert.ok(cancelled > 0, 'some runs were cancelled');
    assert.ok(after - before <= 3 + Math.ceil((Date.now() - clicked) / 1000), `${after - before} reads`);
    assert.equal(await page.locator('table.study-runs tbody tr[data-status="cancelled"]').count(), cancelled);
    assert.equal(await cancel.isVisible(), false, 'nothing left to cancel');
    await shot(page, 'study-cancelled');
    await go(page, '#/studies');
    await page.locator(`table.studies tr[data-id="${id}"][data-status="cancelled"]`).waitFor();
    assert.equal(await page.locator('table.studies tbody tr').count(), 3);
    await shot(page, 'studies-all');
  });

test('no page errors and no console errors', () => {
  assert.deepEqual(problems, []);
});

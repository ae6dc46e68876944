// common.mjs — what the browser tests share: the daemon's address (MAPSAGE_URL, from
// tests/test_web.py) and where screenshots go, Debian's Chromium opened and closed, a JSON
// call to the API, submitting a run and waiting for its status, and a page that records its
// errors, with screenshots and navigation.

import {mkdtempSync, mkdirSync, rmSync} from 'node:fs';
import {join} from 'node:path';
import {tmpdir} from 'node:os';
import assert from 'node:assert/strict';
import {chromium} from 'playwright-core';

export const BASE = process.env.MAPSAGE_URL;
export const ARTIFACTS = process.env.MAPSAGE_ARTIFACTS || join(tmpdir(), 'mapsage-artifacts');
export const CHROMIUM = process.env.MAPSAGE_CHROMIUM || '/usr/bin/chromium';
if (!BASE) throw new Error('MAPSAGE_URL is not set: run tests/test_web.py, or point it at a running mapsaged');

// One API call: {status, body (parsed JSON)}. A body that is a string goes as it is (a
// malformed config, say); the daemon reads only JSON bodies that say so, which fetch would
// otherwise label text/plain.
export async function call(method, path, body) {
  const response = await fetch(BASE + path, {method, headers: body === undefined ? {} : {'Content-Type': 'application/json'},
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)});
  return {status: response.status, body: await response.json()};
}

// Submits a config; returns the new experiment's id (a refusal fails the test).
export async function submit(config) {
  const {status, body} = await call('POST', '/api/experiments', config);
  assert.equal(status, 201, JSON.stringify(body));
  return body.id;
}

// Waits until the experiment's status is one of `statuses`, with a deadline; returns it.
export async function waitStatus(id, statuses, timeout = 120000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const {body} = await call('GET', `/api/experiments/${id}`);
    if (statuses.includes(body.status)) return body;
    if (Date.now() > deadline) throw new Error(`experiment ${id} still ${body.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// Records a page's errors and console errors into `problems`, checked at the end. Chromium
// reports each 4xx answer (a refused config, a refused SQL query) as a console error; those
// are the point of some tests. Anything else is a fault.
export function watch(page, problems) {
  page.setDefaultTimeout(60000);
  page.on('pageerror', (error) => problems.push(`${page.url()}: page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`${page.url()}: console: ${message.text()}`);
    }
  });
  return page;
}

export async function shot(page, name) {
  await page.screenshot({path: join(ARTIFACTS, `${name}.png`), fullPage: true});
}

export async function go(page, hash) {
  await page.goto(`${BASE}/${hash}`);
}

// Debian's Chromium, headless, with a profile of its own: {context, close()}.
export async function openBrowser() {
  mkdirSync(ARTIFACTS, {recursive: true});
  const profile = mkdtempSync(join(tmpdir(), 'mapsage-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: {width: 1280, height: 900},
    colorScheme: 'light',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {context, async close() {
    await context.close();
    rmSync(profile, {recursive: true, force: true});
  }};
}

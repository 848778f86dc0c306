// The web console driven in Debian's chromium through playwright-core, against a running
// platform (`lambda up`): sign in, the example functions Ready, a function created from the
// form (a validation error shown on its field, then fixed), invoked (sync and async, with
// the execution's logs), code uploaded as a file, functions deleted, a pool's node count
// followed after its replicas are edited in etcd (etcdctl), and the events. Screenshots of
// each page go to $CONSOLE_SCREENSHOTS. Run it with scripts/console-test.sh.
//
// Environment: LAMBDA_GATEWAY (http://127.0.0.1:8080), LAMBDA_TOKEN_FILE
// (.lambda/platform/token), CONSOLE_NAMESPACE (console-test: where its functions go, deleted
// at the end), CONSOLE_POOL (default/workers), ETCDCTL_ENDPOINTS (http://127.0.0.1:2379),
// CONSOLE_SCREENSHOTS (.lambda/console-screenshots), CONSOLE_README=1 (also write the README's
// two pictures under docs/).

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const gateway = process.env.LAMBDA_GATEWAY || 'http://127.0.0.1:8080';
const token = fs.readFileSync(process.env.LAMBDA_TOKEN_FILE || path.join(root, '.lambda/platform/token'), 'utf8').trim();
const ns = process.env.CONSOLE_NAMESPACE || 'console-test';
const [poolNs, poolName] = (process.env.CONSOLE_POOL || 'default/workers').split('/');
const etcd = process.env.ETCDCTL_ENDPOINTS || 'http://127.0.0.1:2379';
const shots = path.resolve(root, process.env.CONSOLE_SCREENSHOTS || '.lambda/console-screenshots');
const readme = process.env.CONSOLE_README === '1';
const console_ = `${gateway}/console/`;
fs.mkdirSync(shots, { recursive: true });

const results = [];
const t0 = Date.now();
async function step(name, fn) {
  const start = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok   ${name} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
}

async function rest(method, p, body) {
  const r = await fetch(`${gateway}${p}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

const etcdctl = (...args) => execFileSync('etcdctl', ['--endpoints', etcd, ...args], { encoding: 'utf8' });
const poolKey = `/lambda/registry/nodepools/${poolNs}/${poolName}`;

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

const MARKUP = '<img src=x onerror=alert(1)>';
const PY = 'def handler(event, context):\n    name = (event or {}).get("name", "world")\n    print(f"greeting {name}")\n    return {"greeting": f"hello, {name}!"}\n';
const SH = '#!/bin/sh\nread -r line || true\nprintf \'{"uploaded": true}\'\n';

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lambda-console-'));
const context = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30000);
const problems = [];
page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
const requests = [];
page.on('request', (r) => requests.push(r.url()));

let poolOriginal = null;
let failed = false;
try {
  await step('console is served with a strict Content-Security-Policy', async () => {
    const r = await fetch(console_);
    assert.equal(r.status, 200);
    const csp = r.headers.get('content-security-policy') || '';
    for (const d of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) assert.ok(csp.includes(d), `${d} in ${csp}`);
    assert.ok(!csp.includes('unsafe-'), csp);
  });

  await step('a wrong key is refused on the sign-in form', async () => {
    await page.goto(console_);
    await page.getByLabel('API key').fill('lk_nope_nope');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#signin-error', { hasText: 'refused' }).waitFor();
    await shot(page, '00-signin');
  });

  await step('sign in; the example functions turn Ready', async () => {
    await page.getByLabel('API key').fill(token);
    await page.locator('#signin-ns').fill('default');
    await page.getByRole('button', { name: 'Sign in' }).click();
    for (const name of ['hello', 'echo']) {
      await page.locator(`tr[data-name="${name}"] .badge.ok`, { hasText: 'Ready' }).waitFor({ timeout: 120000 });
    }
    await page.locator('.live.on').first().waitFor();
    await shot(page, '01-functions');
    assert.ok(!page.url().includes(token), 'the key is not in the URL');
    assert.ok(!requests.some((u) => u.includes(token)), 'the key is in no request URL');
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('lambda.apiKey')), token);
  });

  await step(`switch to namespace ${ns}`, async () => {
    await page.locator('#ns-input').fill(ns);
    await page.getByRole('button', { name: 'Go' }).click();
    await page.getByRole('heading', { name: `Functions in ${ns}` }).waitFor();
  });

  await step('every form field has a label', async () => {
    await page.getByRole('link', { name: 'New function' }).click();
    await page.locator('form.fn').waitFor();
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('form.fn input, form.fn select, form.fn textarea')]
      .filter((el) => !el.labels?.length && !el.getAttribute('aria-label')).map((el) => el.outerHTML));
    assert.deepEqual(unlabelled, []);
  });

  await step('create from the form: a validation error on its field, then fixed', async () => {
    await page.getByLabel('Name', { exact: true }).fill('console-e2e');
    await page.getByLabel('Labels').fill(`note=${MARKUP}`);
    await page.getByLabel('Code', { exact: true }).fill(PY);
    const memory = page.getByLabel('Memory (MiB)');
    await memory.fill('8');
    await page.getByRole('button', { name: 'Create' }).click();
    const err = page.locator('[data-field="spec.resources.memoryMb"] ~ .field-error');
    await err.waitFor();
    assert.match(await err.textContent(), /between 32 and 16384/);
    assert.equal(await memory.getAttribute('aria-invalid'), 'true');
    assert.ok(await memory.evaluate((el) => el === document.activeElement), 'the field in error has the focus');
    await shot(page, '02-validation-error');
    await memory.fill('128');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(/#\/functions\/console-e2e$/);
  });

  await step('the new function turns Ready; its markup label renders as text', async () => {
    await page.locator('#fn-ready .badge.ok', { hasText: 'Ready' }).waitFor({ timeout: 180000 });
    await page.getByText(`note=${MARKUP}`).first().waitFor();
    assert.equal(await page.locator('main img').count(), 0, 'no element made of the label');
  });

  await step('invoke it and see the result, status code and duration', async () => {
    await page.getByLabel('Event (JSON body)').fill('{"name": "console"}');
    await page.getByRole('button', { name: 'Invoke' }).click();
    await page.locator('#invoke-status', { hasText: 'HTTP 200' }).waitFor();
    assert.match(await page.locator('#invoke-output').textContent(), /hello, console!/);
    assert.match(await page.locator('#invoke-duration').textContent(), /ms/);
    assert.match(await page.locator('#invoke-logs-output').textContent(), /greeting console/);
    // The charts pick the call up.
    await page.locator('figure.chart svg rect.bar').first().waitFor({ timeout: 15000 });
    await shot(page, '03-function');
  });

  await step('an asynchronous invocation becomes an execution with its logs', async () => {
    await page.getByLabel('Event (JSON body)').fill('{"name": "later"}');
    await page.getByLabel(/Asynchronous/).check();
    await page.getByRole('button', { name: 'Invoke' }).click();
    await page.locator('#invoke-status', { hasText: 'HTTP 202' }).waitFor();
    await page.locator('#execution-detail .badge', { hasText: 'Succeeded' }).waitFor({ timeout: 60000 });
    assert.match(await page.locator('#execution-logs').textContent(), /greeting later/);
    await shot(page, '04-execution');
  });

  await step('upload code as a file', async () => {
    await page.goto(`${console_}#/functions/new`);
    await page.getByLabel('Name', { exact: true }).fill('console-upload');
    await page.getByLabel('…or upload a file').setInputFiles({ name: 'upload.sh', mimeType: 'text/x-sh', buffer: Buffer.from(SH) });
    await page.getByText('Loaded upload.sh').waitFor();
    assert.equal(await page.getByLabel('Runtime').inputValue(), 'shell', 'the runtime follows the file');
    assert.equal(await page.getByLabel('Code', { exact: true }).inputValue(), SH);
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(/#\/functions\/console-upload$/);
    await page.locator('#fn-ready .badge.ok', { hasText: 'Ready' }).waitFor({ timeout: 180000 });
    await page.getByLabel('Event (JSON body)').fill('{}');
    await page.getByRole('button', { name: 'Invoke' }).click();
    await page.locator('#invoke-status', { hasText: 'HTTP 200' }).waitFor();
    assert.match(await page.locator('#invoke-output').textContent(), /uploaded/);
  });

  await step('delete with confirmation', async () => {
    await page.goto(`${console_}#/functions`);
    const row = page.locator('tr[data-name="console-upload"]');
    await row.getByRole('button', { name: 'Delete' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await row.count(), 1, 'cancel keeps it');
    await row.getByRole('button', { name: 'Delete' }).click();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached', timeout: 120000 });
    await page.locator('tr[data-name="console-e2e"]').getByRole('button', { name: 'Delete' }).click();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await page.locator('tr[data-name="console-e2e"]').waitFor({ state: 'detached', timeout: 120000 });
  });

  await step(`the pool ${poolNs}/${poolName} follows an etcdctl edit of its replicas`, async () => {
    await page.goto(`${console_}#/platform`);
    const row = page.locator(`tr[data-pool="${poolNs}/${poolName}"]`);
    await row.waitFor();
    poolOriginal = etcdctl('get', poolKey, '--print-value-only');
    const m = poolOriginal.match(/^ {2}replicas: (\d+)$/m);
    const max = Number((poolOriginal.match(/^ {2}maxReplicas: (\d+)$/m) || [0, 10])[1]);
    assert.ok(m, `spec.replicas in ${poolKey}`);
    const now = Number(m[1]);
    const next = now + 1 <= max ? now + 1 : now - 1;
    etcdctl('put', poolKey, poolOriginal.replace(/^ {2}replicas: \d+$/m, `  replicas: ${next}`));
    await row.locator(`td[data-nodes="${next}"]`).waitFor({ timeout: 60000 });
    await page.locator('#pool-charts .mark').first().waitFor({ timeout: 20000 });
    // A booted, joined node is Ready; then back as it was, and the node goes.
    await row.locator(`td[data-nodes="${next}"][data-ready="${next}"]`).waitFor({ timeout: 240000 });
    etcdctl('put', poolKey, poolOriginal);
    poolOriginal = null;
    await row.locator(`td[data-nodes="${now}"][data-ready="${now}"]`).waitFor({ timeout: 240000 });
    await page.locator('#pool-charts .mark').nth(1).waitFor({ timeout: 20000 });
    await shot(page, '05-platform');
  });

  await step('the events stream', async () => {
    await page.goto(`${console_}#/events`);
    await page.locator('main tbody tr td .badge').first().waitFor();
    await page.locator('main tbody tr', { hasText: 'NodePool' }).first().waitFor({ timeout: 30000 });
    await shot(page, '06-events');
  });

  await step('readable on a phone', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${console_}#/functions`);
    await page.locator('#ns-input').fill('default');
    await page.getByRole('button', { name: 'Go' }).click();
    await page.locator('tr[data-name="hello"]').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the page is ${overflow}px wider than the phone`);
    await shot(page, '07-phone');
  });

  await step('no console error and no CSP violation on any page', async () => {
    assert.deepEqual(problems.filter((p) => !/status of 40[01]/.test(p)), []);
  });
} catch {
  failed = true;
  await shot(page, 'zz-failure').catch(() => {});
} finally {
  if (poolOriginal) {
    try { etcdctl('put', poolKey, poolOriginal); } catch (e) { console.log(`restoring ${poolKey}: ${e}`); failed = true; }
  }
  for (const name of ['console-e2e', 'console-upload']) {
    await rest('DELETE', `/v1/namespaces/${ns}/functions/${name}`).catch(() => {});
  }
  await context.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}

if (readme && !failed) {
  fs.copyFileSync(path.join(shots, '03-function.png'), path.join(root, 'docs/console-function.png'));
  fs.copyFileSync(path.join(shots, '05-platform.png'), path.join(root, 'docs/console-pool.png'));
}
const passed = results.filter(([, ok]) => ok).length;
console.log(`console: ${((Date.now() - t0) / 1000).toFixed(0)} s, screenshots in ${shots}`);
console.log(`${passed} passed, ${results.length - passed + (failed && results.every(([, ok]) => ok) ? 1 : 0)} failed`);
process.exit(failed ? 1 : 0);

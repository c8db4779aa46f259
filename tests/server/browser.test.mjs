// The chat page in headless Chromium (puppeteer-core, the system browser): two turns stream in,
// each answer shows tokens/s, the second shows cached tokens, and the console stays clean.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { metrics, sleep, startServer } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

describe('chat page in Chromium', { timeout: 120_000 }, () => {
  let srv, browser, tmp;
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jamba-chat-page-'));
    const { default: puppeteer } = await import('puppeteer-core');
    srv = await startServer();
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir: path.join(tmp, 'profile'),
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage'],
      timeout: 60_000,
    });
  });
  after(async () => {
    await browser?.close();
    await srv?.stop();
  });

  it('streams two turns, shows tokens/s and cached tokens', async (t) => {
    const page = await browser.newPage();
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    const external = [];
    page.on('request', (r) => { if (!r.url().startsWith(srv.baseURL) && !r.url().startsWith('data:')) external.push(r.url()); });

    const res = await page.goto(`${srv.baseURL}/`, { waitUntil: 'load' });
    assert.equal(res.status(), 200);
    for (const id of ['#input', '#send', '#stop', '#messages']) assert.ok(await page.$(id), `${id} exists`);
    await page.$eval('#max-tokens', (el) => { el.value = '24'; });
    await page.$eval('#temperature', (el) => { el.value = '0'; });

    const turn = async (text, n) => {
      await page.type('#input', text);
      await page.click('#send');
      // Stop is enabled while the answer streams, and the answer's stats appear at the end.
      await page.waitForFunction((k) => document.querySelectorAll('#messages .stats').length >= k,
        { timeout: 60_000 }, n);
      return page.evaluate((k) => {
        const answers = [...document.querySelectorAll('#messages .msg.assistant')];
        const a = answers[k - 1];
        const st = a.querySelector('.stats');
        return { text: a.querySelector('.content').textContent, stats: st.textContent, data: { ...st.dataset },
          answers: answers.length, stopDisabled: document.querySelector('#stop').disabled };
      }, n);
    };

    const first = await turn('Who was Moses?', 1);
    assert.ok(first.text.trim().length > 0, 'the first answer streamed in');
    assert.match(first.stats, /tok\/s/);
    assert.ok(Number(first.data.tps) > 0, `tokens/s ${first.data.tps}`);
    assert.ok(first.stopDisabled, 'Stop is disabled when idle');

    const second = await turn('And what did he say unto Pharaoh?', 2);
    assert.equal(second.answers, 2);
    assert.ok(second.text.trim().length > 0, 'the second answer streamed in');
    assert.match(second.stats, /tok\/s/);
    assert.ok(Number(second.data.cached) > 0, `cached tokens on the second turn: ${second.stats}`);
    assert.match(second.stats, /[1-9]\d* cached/);

    const shot = path.join(tmp, 'chat.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 1000);
    t.diagnostic(`screenshot: ${shot}`);

    // New chat clears the conversation.
    await page.click('#new');
    assert.equal(await page.$$eval('#messages .msg', (els) => els.length), 0);

    assert.deepEqual(problems, [], 'no console errors');
    assert.deepEqual(external, [], 'no external requests');

    // Stop aborts a long answer: the partial answer stays, marked stopped, and the server lets go.
    // (Greedy, this question makes the demo model repeat itself up to max tokens.)
    await page.$eval('#max-tokens', (el) => { el.value = '3000'; });
    await page.type('#input', 'Who was Moses?');
    await page.click('#send');
    await page.waitForFunction(() => {
      const c = document.querySelector('#messages .msg.assistant .content');
      return c && c.textContent.length > 0;
    }, { timeout: 30_000 });
    await page.click('#stop');
    await page.waitForFunction(() => /stopped/.test(document.querySelector('#messages .stats')?.textContent ?? ''),
      { timeout: 10_000 });
    assert.equal(await page.$eval('#send', (el) => el.disabled), false, 'Send is enabled again');
    let active = 1;
    for (let i = 0; i < 20 && active !== 0; i++) {
      await sleep(100);
      active = (await metrics(srv.baseURL)).jamba_requests_active;
    }
    assert.equal(active, 0, 'the server dropped the aborted request');
    await page.close();
  });

  it('sends the API key field as a Bearer token; without it shows the 401 error', async () => {
    const keyed = await startServer(['--api-key', 'sk-page']);
    const page = await browser.newPage();
    try {
      await page.goto(`${keyed.baseURL}/`, { waitUntil: 'load' });
      await page.$eval('#max-tokens', (el) => { el.value = '8'; });
      await page.type('#input', 'Who was Moses?');
      await page.click('#send');
      await page.waitForSelector('#messages .msg.error', { timeout: 30_000 });
      const err = await page.$eval('#messages .msg.error', (el) => el.textContent);
      assert.match(err, /key|auth|401/i, `error shown: ${err}`);

      await page.click('#settings-box summary');
      await page.type('#api-key', 'sk-page');
      await page.type('#input', 'Who was Moses?');
      await page.click('#send');
      await page.waitForFunction(() => document.querySelectorAll('#messages .stats').length >= 1, { timeout: 60_000 });
      const stats = await page.$eval('#messages .stats', (el) => el.textContent);
      assert.match(stats, /tok\/s/);
    } finally {
      await page.close();
      await keyed.stop();
    }
  });
});

// `jamba serve` through the official OpenAI Node SDK: models, chat and text completions (plain and
// streamed), usage/timings, stop strings, seeds, logprobs, parameter errors, API keys, metrics.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  MODEL_ID, assertErrorBody, assertTimings, assertUsage, metrics, openaiClient, postJSON, request,
  sleep, startServer,
} from './harness.mjs';

const CHAT = [
  { role: 'system', content: 'Thou art a scribe of the old books.' },
  { role: 'user', content: 'Tell me of Moses and the children of Israel.' },
];

describe('OpenAI SDK', () => {
  let srv, oa;
  before(async () => {
    srv = await startServer();
    oa = await openaiClient(srv.baseURL);
  });
  after(async () => { await srv?.stop(); });

  it('models.list returns the model directory name', async () => {
    const page = await oa.models.list();
    assert.deepEqual(page.data.map((m) => m.id), [MODEL_ID]);
    assert.equal(page.data[0].object, 'model');
    const raw = await request(srv.baseURL, '/v1/models');
    assert.equal(raw.json.object, 'list');
  });

  it('health, tokenize and detokenize', async () => {
    const h = await request(srv.baseURL, '/health');
    assert.equal(h.status, 200);
    assert.deepEqual(h.json, { status: 'ok' });
    const text = 'And God said, Let there be light: and there was light.';
    const t = await postJSON(srv.baseURL, '/tokenize', { content: text, add_special: false });
    assert.equal(t.status, 200, t.text);
    assert.ok(Array.isArray(t.json.tokens) && t.json.tokens.length > 5);
    assert.ok(t.json.tokens.every((x) => Number.isInteger(x) && x >= 0 && x < 4096), 'token ids in the vocab');
    const d = await postJSON(srv.baseURL, '/detokenize', { tokens: t.json.tokens });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json.content, text);
    const ts = await postJSON(srv.baseURL, '/tokenize', { content: text, add_special: true });
    assert.ok(ts.json.tokens.length >= t.json.tokens.length);
    assert.deepEqual(ts.json.tokens.slice(-t.json.tokens.length), t.json.tokens, 'add_special only adds a prefix');
  });

  it('chat: streamed deltas equal the non-streamed answer (greedy), usage and timings agree', async () => {
    const req = { model: MODEL_ID, messages: CHAT, temperature: 0, max_tokens: 24 };
    const full = await oa.chat.completions.create(req);
    assert.equal(full.object, 'chat.completion');
    assert.match(full.id, /\S/);
    assert.equal(full.model, MODEL_ID);
    assert.equal(full.choices.length, 1);
    const c = full.choices[0];
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
    assertUsage(full.usage);
    assert.ok(full.usage.completion_tokens >= 1 && full.usage.completion_tokens <= 24);
    if (c.finish_reason === 'length') assert.equal(full.usage.completion_tokens, 24);
    assertTimings(full.timings, full.usage);

    const s = await oa.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null, timings = null, contentChunks = 0, role = null;
    const ids = new Set();
    for await (const chunk of s) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      ids.add(chunk.id);
      if (chunk.usage) {
        assert.deepEqual(chunk.choices, [], 'the usage chunk has empty choices');
        usage = chunk.usage;
      }
      if (chunk.timings) timings = chunk.timings;
      const ch = chunk.choices[0];
      if (!ch) continue;
      if (ch.delta.role) role = ch.delta.role;
      if (ch.delta.content) { text += ch.delta.content; contentChunks++; }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    assert.equal(ids.size, 1, 'one id for all chunks');
    assert.equal(role, 'assistant');
    assert.equal(text, c.message.content, 'streamed text == non-streamed text');
    assert.equal(finish, c.finish_reason);
    assertUsage(usage);
    assert.equal(usage.prompt_tokens, full.usage.prompt_tokens);
    assert.equal(usage.completion_tokens, full.usage.completion_tokens);
    // A chunk carries the text of one or more tokens; a token may also complete no character yet.
    assert.ok(contentChunks <= usage.completion_tokens, `${contentChunks} chunks for ${usage.completion_tokens} tokens`);
    assertTimings(timings, usage);
  });

  it('chat: streamed logprobs give one entry per generated token (= completion_tokens)', async () => {
    const s = await oa.chat.completions.create({
      model: MODEL_ID, messages: CHAT, temperature: 0, max_tokens: 12, stream: true,
      logprobs: true, top_logprobs: 2, stream_options: { include_usage: true },
    });
    const entries = [];
    let usage = null;
    for await (const chunk of s) {
      if (chunk.usage) usage = chunk.usage;
      const lp = chunk.choices[0]?.logprobs?.content;
      if (lp) entries.push(...lp);
    }
    assertUsage(usage);
    assert.equal(entries.length, usage.completion_tokens);
    for (const e of entries) assert.equal(e.top_logprobs.length, 2);
  });

  it('chat: logprobs with top_logprobs (greedy picks the top entry)', async () => {
    const r = await oa.chat.completions.create({
      model: MODEL_ID, messages: CHAT, temperature: 0, max_tokens: 8, logprobs: true, top_logprobs: 3,
    });
    const lp = r.choices[0].logprobs?.content;
    assert.ok(Array.isArray(lp), `logprobs.content: ${JSON.stringify(r.choices[0].logprobs)}`);
    assert.equal(lp.length, r.usage.completion_tokens);
    for (const e of lp) {
      assert.equal(typeof e.token, 'string');
      assert.ok(typeof e.logprob === 'number' && e.logprob <= 1e-6, `logprob ${e.logprob}`);
      assert.equal(e.top_logprobs.length, 3);
      for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob, 'sorted');
      assert.equal(e.token, e.top_logprobs[0].token, 'greedy token is the most likely one');
      assert.ok(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-4);
    }
    const none = await oa.chat.completions.create({ model: MODEL_ID, messages: CHAT, temperature: 0, max_tokens: 4 });
    assert.ok(none.choices[0].logprobs == null, 'no logprobs unless requested');
  });

  it('logprobs tokens spell out the generated text (OpenAI semantics: each token\'s text and bytes)', async () => {
    // Run to max_tokens, so no end-of-text token (which has no text) is among them.
    const prompt = 'And it came to pass';
    const c = await oa.completions.create({ prompt, temperature: 0, max_tokens: 12, logprobs: 1 });
    assert.equal(c.choices[0].finish_reason, 'length');
    assert.equal(c.choices[0].logprobs.tokens.length, 12);
    assert.equal(c.choices[0].logprobs.tokens.join(''), c.choices[0].text, 'completions: tokens joined == text');
    const r = await oa.chat.completions.create({
      messages: [{ role: 'user', content: 'And it came to pass' }], temperature: 0, max_tokens: 12, logprobs: true,
    });
    let lp = r.choices[0].logprobs.content;
    if (r.choices[0].finish_reason === 'stop') lp = lp.slice(0, -1); // the end-of-text token
    const joined = Buffer.concat(lp.map((e) => Buffer.from(e.bytes ?? []))).toString('utf8');
    const text = r.choices[0].message.content;
    // The chat answer may be stripped of the leading space its first token carries.
    assert.ok(joined === text || joined.trimStart() === text, `chat: bytes joined ${JSON.stringify(joined)} vs ${JSON.stringify(text)}`);
    assert.ok(lp.map((e) => e.token).join('').trimStart() === text.trimStart(), 'chat: tokens joined == content');
  });

  it('chat: max_completion_tokens limits the answer', async () => {
    const r = await oa.chat.completions.create({ messages: CHAT, temperature: 0, max_completion_tokens: 5 });
    assert.ok(r.usage.completion_tokens <= 5);
    if (r.choices[0].finish_reason === 'length') assert.equal(r.usage.completion_tokens, 5);
  });

  it('completions: a string prompt and its token ids give the same greedy text', async () => {
    const prompt = 'In the beginning God created';
    const a = await oa.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 16 });
    assert.equal(a.object, 'text_completion');
    assert.equal(a.choices.length, 1);
    assert.equal(typeof a.choices[0].text, 'string');
    assert.ok(a.choices[0].text.length > 0);
    assertUsage(a.usage);
    assertTimings(a.timings, a.usage);
    const t = await postJSON(srv.baseURL, '/tokenize', { content: prompt, add_special: true });
    assert.equal(t.json.tokens.length, a.usage.prompt_tokens, 'string prompt = tokenize(add_special)');
    const b = await oa.completions.create({ model: MODEL_ID, prompt: t.json.tokens, temperature: 0, max_tokens: 16 });
    assert.equal(b.choices[0].text, a.choices[0].text);
    assert.equal(b.usage.prompt_tokens, t.json.tokens.length);
    assert.equal(b.usage.completion_tokens, a.usage.completion_tokens);

    const s = await oa.completions.create({ prompt, temperature: 0, max_tokens: 16, stream: true, stream_options: { include_usage: true } });
    let text = '', usage = null;
    for await (const chunk of s) {
      assert.equal(chunk.object, 'text_completion');
      if (chunk.usage) usage = chunk.usage;
      text += chunk.choices[0]?.text ?? '';
    }
    assert.equal(text, a.choices[0].text, 'streamed completion == non-streamed');
    assert.equal(usage?.completion_tokens, a.usage.completion_tokens);
  });

  it('stop strings end the text before the stop string with finish_reason "stop"', async () => {
    const prompt = 'And it came to pass';
    const base = await oa.completions.create({ prompt, temperature: 0, max_tokens: 40 });
    const full = base.choices[0].text;
    // A stop string that first occurs well inside the greedy output.
    let k = -1, stop = '';
    for (let i = 8; i + 4 <= full.length; i++) {
      const cand = full.slice(i, i + 4);
      if (cand.trim().length >= 2 && full.indexOf(cand) === i) { k = i; stop = cand; break; }
    }
    assert.ok(k > 0, `no usable stop string in ${JSON.stringify(full)}`);
    for (const stopField of [stop, ['@@never@@', stop]]) {
      const r = await oa.completions.create({ prompt, temperature: 0, max_tokens: 40, stop: stopField });
      assert.equal(r.choices[0].text, full.slice(0, k), `stop ${JSON.stringify(stopField)} in ${JSON.stringify(full)}`);
      assert.equal(r.choices[0].finish_reason, 'stop');
      assert.ok(r.usage.completion_tokens <= base.usage.completion_tokens);
    }
    const s = await oa.completions.create({ prompt, temperature: 0, max_tokens: 40, stop, stream: true });
    let text = '', finish = null;
    for await (const chunk of s) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, full.slice(0, k), 'streamed text with a stop string');
    assert.equal(finish, 'stop');
  });

  it('seeds: same seed repeats, different seeds differ', async () => {
    const prompt = 'Blessed are';
    const gen = (seed) => oa.completions.create({ prompt, temperature: 0.9, seed, max_tokens: 12 })
      .then((r) => r.choices[0].text);
    const a = await gen(42), b = await gen(42);
    assert.equal(a, b, 'same seed, same text');
    const texts = [];
    for (const seed of [1, 2, 3, 4, 5, 6]) texts.push(await gen(seed));
    assert.ok(new Set(texts).size > 1, `six seeds all gave ${JSON.stringify(texts[0])}`);
  });

  it('n=2 is a 400 naming "n"; an unknown model is a 404', async () => {
    await assert.rejects(
      oa.chat.completions.create({ messages: CHAT, n: 2, max_tokens: 4 }),
      (e) => e.constructor.name === 'BadRequestError' && e.status === 400 && e.param === 'n');
    await assert.rejects(
      oa.chat.completions.create({ model: 'gpt-17', messages: CHAT, max_tokens: 4 }),
      (e) => e.constructor.name === 'NotFoundError' && e.status === 404);
    const raw = await postJSON(srv.baseURL, '/v1/completions', { model: 'gpt-17', prompt: 'x', max_tokens: 2 });
    assert.equal(raw.status, 404);
    assertErrorBody(raw.json, 404);
  });

  it('metrics count prompt and generated tokens', async () => {
    const before = await metrics(srv.baseURL);
    for (const k of ['jamba_requests_total', 'jamba_prompt_tokens_total', 'jamba_generated_tokens_total',
      'jamba_prefix_cache_lookups_total', 'jamba_prefix_cache_hits_total',
      'jamba_prefix_cache_tokens_reused_total', 'jamba_prefix_cache_bytes', 'jamba_requests_active',
      'jamba_requests_queued']) {
      assert.ok(k in before, `/metrics lacks ${k}`);
    }
    const logLines = srv.stderrLines.length;
    const r = await oa.completions.create({ prompt: 'Thou shalt', temperature: 0, max_tokens: 6 });
    const afterM = await metrics(srv.baseURL);
    for (let i = 0; i < 20 && srv.stderrLines.length === logLines; i++) await sleep(50);
    assert.ok(srv.stderrLines.length > logLines, 'a log line on stderr for the request');
    assert.ok(afterM.jamba_requests_total >= before.jamba_requests_total + 1);
    assert.equal(afterM.jamba_prompt_tokens_total - before.jamba_prompt_tokens_total, r.usage.prompt_tokens);
    assert.equal(afterM.jamba_generated_tokens_total - before.jamba_generated_tokens_total, r.usage.completion_tokens);
    assert.equal(afterM.jamba_requests_active, 0);
    assert.equal(afterM.jamba_requests_queued, 0);
  });
});

describe('API key', () => {
  let srv;
  before(async () => { srv = await startServer(['--api-key', 'sk-test']); });
  after(async () => { await srv?.stop(); });

  it('a wrong or missing key is a 401 on /v1/*, the right key works, / and /health stay open', async () => {
    const bad = await openaiClient(srv.baseURL, 'sk-wrong');
    await assert.rejects(bad.models.list(), (e) => e.constructor.name === 'AuthenticationError' && e.status === 401);
    await assert.rejects(
      bad.chat.completions.create({ messages: CHAT, max_tokens: 2 }),
      (e) => e.constructor.name === 'AuthenticationError' && e.status === 401);
    for (const route of ['/v1/models', '/v1/chat/completions', '/v1/completions']) {
      const r = route === '/v1/models' ? await request(srv.baseURL, route)
        : await postJSON(srv.baseURL, route, { prompt: 'x', messages: CHAT, max_tokens: 2 });
      assert.equal(r.status, 401, `${route} without a key`);
      assertErrorBody(r.json, 401);
    }
    const good = await openaiClient(srv.baseURL, 'sk-test');
    const list = await good.models.list();
    assert.equal(list.data[0].id, MODEL_ID);
    const r = await good.chat.completions.create({ messages: CHAT, max_tokens: 4, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.equal((await request(srv.baseURL, '/health')).status, 200);
    const page = await request(srv.baseURL, '/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.text, /id="input"/);
  });
});

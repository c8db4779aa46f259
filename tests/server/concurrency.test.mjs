// Concurrent requests: batched decoding gives each request exactly what it gets alone, and a full
// queue answers 503 instead of hanging.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertErrorBody, assertUsage, metrics, postJSON, request, startServer, stream } from './harness.mjs';

// Greedy completions of these run from 3 tokens to max_tokens (the demo model's chat answers are
// mostly a word or two, so plain completions exercise the batch better).
const PROMPTS = ['And it came to pass', 'Blessed are the', 'The LORD is my shepherd', 'And God said',
  'Now the serpent was', 'And Jacob went', 'Then came David', 'In those days',
  'And Moses said unto the people', 'Thus saith the LORD', 'And the king', 'Hear, O Israel',
  'For God so loved', 'Behold, I', 'Wherefore', 'I am the'];

// The server's default GEMM inputs are float32 (`--activations f32`), so a row's numbers do not
// depend on what else is in the batch. (With bf16-rounded inputs, `--activations auto`, a batch
// of rows takes other kernels than one row and the rounding turns last-bit differences into
// ~1e-3 logit moves that flip near ties; docs/SERVER.md.)
for (const [label, args] of [['default settings', []]]) {
  describe(`16 concurrent streams (${label})`, () => {
    let srv;
    before(async () => { srv = await startServer(args); });
    after(async () => { await srv?.stop(); });

    it('each concurrent greedy stream equals the same request alone, token for token', async () => {
      const body = (prompt) => ({
        prompt, temperature: 0, max_tokens: 32, logprobs: 1, stream_options: { include_usage: true },
      });
      const alone = [];
      for (const p of PROMPTS) alone.push(await stream(srv.baseURL, '/v1/completions', body(p)));
      for (const r of alone) {
        assert.equal(r.status, 200, r.body);
        assert.ok(r.done, 'stream ends with [DONE]');
        assertUsage(r.usage);
        assert.equal(r.logprobs.length, r.usage.completion_tokens, 'a logprobs token per generated token');
      }
      assert.equal(new Set(alone.map((r) => r.text)).size, PROMPTS.length, 'different prompts, different texts');

      const together = await Promise.all(PROMPTS.map((p) => stream(srv.baseURL, '/v1/completions', body(p))));
      for (const [i, r] of together.entries()) {
        const a = alone[i];
        assert.equal(r.status, 200, r.body);
        assert.ok(r.done, 'stream ends with [DONE]');
        assert.deepEqual(r.logprobs.map((e) => e.token), a.logprobs.map((e) => e.token),
          `request ${i} (${JSON.stringify(PROMPTS[i])}): tokens concurrent vs alone`);
        assert.equal(r.text, a.text, `request ${i} (${JSON.stringify(PROMPTS[i])}): text concurrent vs alone`);
        assert.equal(r.finish_reason, a.finish_reason);
        assert.equal(r.usage.completion_tokens, a.usage.completion_tokens);
        assert.equal(r.usage.prompt_tokens, a.usage.prompt_tokens);
      }
      const m = await metrics(srv.baseURL);
      assert.equal(m.jamba_requests_active, 0);
      assert.equal(m.jamba_requests_queued, 0);
    });
  });
}

describe('queue full', () => {
  let srv;
  before(async () => { srv = await startServer(['--parallel', '1', '--queue', '1']); });
  after(async () => { await srv?.stop(); });

  it('--parallel 1 --queue 1: 6 concurrent long requests -> some 503 with an error body, the rest 200', async () => {
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => postJSON(srv.baseURL, '/v1/completions', {
      prompt: `And it came to pass in the ${i + 1}th year of the reign of the king, that`,
      max_tokens: 300, temperature: 0.8, seed: i,
    })));
    const statuses = results.map((r) => r.status);
    assert.ok(statuses.every((s) => s === 200 || s === 503), `statuses ${statuses}`);
    assert.ok(statuses.includes(503), `no 503 among ${statuses}`);
    assert.ok(statuses.filter((s) => s === 200).length >= 1, `no 200 among ${statuses}`);
    for (const r of results) {
      if (r.status === 503) assertErrorBody(r.json, 503);
      else assertUsage(r.json.usage);
    }
    // The server is not stuck afterwards.
    const again = await postJSON(srv.baseURL, '/v1/completions', { prompt: 'Amen', max_tokens: 4 });
    assert.equal(again.status, 200, again.text);
    assert.equal((await request(srv.baseURL, '/health')).status, 200);
  });
});

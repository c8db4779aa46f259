// Multi-turn chat and the prefix cache: each turn's request repeats the previous answer verbatim,
// so the server must find the whole previous turn (its prompt and its answer) in the cache, and
// the cached answer must be exactly what a server without a cache gives.
//
// Why "- 1": the answer's last generated token is sampled from the logits of the token before it
// and is never itself fed through the model (when it is the end-of-turn / stop token the request
// ends there, and at max_tokens nothing further is computed), so the cached state of a turn ends
// one token short of prompt + completion.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertUsage, metrics, postJSON, startServer } from './harness.mjs';

const QUESTIONS = [
  'Who was Moses?', 'What did the LORD say unto Abraham?', 'Tell me of the flood.',
  'Who built the temple?', 'What is the first commandment?', 'Who was the wisest king?',
  'What happened at Jericho?', 'Who slew Goliath?', 'What is written in the psalms?',
  'How shall a man be saved?',
];

// Two runs with the default settings (float32 GEMM inputs, so a turn computed by decoding on the
// warm server and the same tokens prefilled on the cold one agree to float32 rounding):
//  - greedy. The demo model's greedy chat answers are short (often a lone "." and the
//    end-of-text token), so this mostly checks the prompt side.
//  - seeded sampling at temperature 0.7: answers of several words, so the verbatim answers that
//    come back in the history (and must match the cached tokens) are real text; sampling walks
//    the whole distribution, so it needs the cached and the cold logits to agree closely.
const RUNS = [
  { label: 'greedy', args: [], sampling: () => ({ temperature: 0 }) },
  { label: 'seeded sampling', args: [],
    sampling: (turn) => ({ temperature: 0.7, seed: 100 + turn }), minWords: 3 * QUESTIONS.length },
];

for (const run of RUNS) {
  describe(`10-turn chat with the prefix cache (${run.label})`, () => {
    let warm, cold;
    before(async () => {
      [warm, cold] = await Promise.all([startServer(run.args), startServer(['--cache-ram', '0', ...run.args])]);
    });
    after(async () => { await Promise.all([warm?.stop(), cold?.stop()]); });

    it('reuses the whole previous turn and answers like a cold server', async () => {
      const messages = [{ role: 'system', content: 'Answer in the words of the scriptures.' }];
      let prev = null;
      const hits0 = (await metrics(warm.baseURL)).jamba_prefix_cache_hits_total;
      let words = 0;
      for (const [turn, q] of QUESTIONS.entries()) {
        messages.push({ role: 'user', content: q });
        const body = { messages, max_tokens: 16, ...run.sampling(turn) };
        const [w, c] = await Promise.all([
          postJSON(warm.baseURL, '/v1/chat/completions', body),
          postJSON(cold.baseURL, '/v1/chat/completions', body),
        ]);
        assert.equal(w.status, 200, w.text);
        assert.equal(c.status, 200, c.text);
        const uw = w.json.usage, uc = c.json.usage;
        assertUsage(uw);
        assertUsage(uc);
        const answer = w.json.choices[0].message.content;
        assert.equal(answer, c.json.choices[0].message.content, `turn ${turn + 1}: cached vs cold answer`);
        assert.equal(uw.prompt_tokens, uc.prompt_tokens, `turn ${turn + 1}: prompt_tokens`);
        assert.equal(uw.completion_tokens, uc.completion_tokens, `turn ${turn + 1}: completion_tokens`);
        assert.equal(uc.prompt_tokens_details.cached_tokens, 0, `turn ${turn + 1}: --cache-ram 0 caches nothing`);
        if (prev) {
          const need = prev.prompt_tokens + prev.completion_tokens - 1;
          assert.ok(uw.prompt_tokens_details.cached_tokens >= need,
            `turn ${turn + 1}: cached_tokens ${uw.prompt_tokens_details.cached_tokens} < previous prompt ` +
            `${prev.prompt_tokens} + completion ${prev.completion_tokens} - 1`);
          assert.ok(uw.prompt_tokens > need, `turn ${turn + 1}: the prompt grows`);
          assert.equal(w.json.timings.cached_n, uw.prompt_tokens_details.cached_tokens);
        }
        prev = uw;
        words += answer.split(/\s+/).filter(Boolean).length;
        messages.push({ role: 'assistant', content: answer });
      }
      if (run.minWords) assert.ok(words >= run.minWords, `the answers are real text (${words} words in all)`);
      const m = await metrics(warm.baseURL);
      assert.ok(m.jamba_prefix_cache_hits_total - hits0 >= QUESTIONS.length - 1, 'a cache hit per turn after the first');
      assert.ok(m.jamba_prefix_cache_bytes > 0, 'the cache holds state');
      assert.equal((await metrics(cold.baseURL)).jamba_prefix_cache_bytes, 0, '--cache-ram 0 keeps nothing');
    });
  });
}

// Greedy completions from the server are exactly the text of `jamba generate --greedy`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { postJSON, runCli, startServer } from './harness.mjs';

// Two that run to max_tokens, one that ends with the end-of-text token.
const PROMPTS = ['And it came to pass', 'Now the serpent was', 'In the beginning God created'];
const N = 24;

describe('server == CLI', () => {
  let srv;
  before(async () => { srv = await startServer(); });
  after(async () => { await srv?.stop(); });

  for (const prompt of PROMPTS) {
    it(`greedy ${N} tokens of ${JSON.stringify(prompt)}`, async () => {
      const [cli, r] = await Promise.all([
        runCli(['generate', '--model', 'models/kjv', '-p', prompt, '-n', String(N), '--greedy']),
        postJSON(srv.baseURL, '/v1/completions', { prompt, max_tokens: N, temperature: 0 }),
      ]);
      assert.equal(r.status, 200, r.text);
      const text = r.json.choices[0].text;
      // generate prints the generated text and then a newline. (It also echoes a plain prompt
      // before the completion, unlike the server's text: strip that echo when present.)
      let out = cli.stdout.replace(/\n$/, '');
      if (out !== text && out.startsWith(prompt)) out = out.slice(prompt.length);
      assert.equal(text, out, `server vs CLI stdout ${JSON.stringify(cli.stdout)}`);
      assert.ok(r.json.usage.completion_tokens <= N);
    });
  }
});

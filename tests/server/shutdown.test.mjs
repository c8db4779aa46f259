// Graceful shutdown: SIGTERM while a stream is running ends the stream (with [DONE] or a closed
// connection) and the server exits 0 within 20 s.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sseData, startServer, withTimeout } from './harness.mjs';

describe('graceful shutdown', () => {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    it(`${signal} during an active stream`, async () => {
      const srv = await startServer();
      const res = await fetch(`${srv.baseURL}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          messages: [{ role: 'user', content: 'Tell me all the generations of Adam.' }],
          max_tokens: 4000, temperature: 0.8, seed: 3, stream: true,
        }),
      });
      assert.equal(res.status, 200);
      const it = sseData(res)[Symbol.asyncIterator]();
      const first = await it.next();
      assert.equal(first.done, false, 'a first chunk');
      assert.notEqual(first.value, '[DONE]');
      // The stream drains in the background while the server shuts down.
      const drained = (async () => {
        let sawDone = false, closed = false;
        try {
          for (;;) {
            const n = await it.next();
            if (n.done) break;
            if (n.value === '[DONE]') sawDone = true;
          }
        } catch {
          closed = true; // the connection was cut: also an end of the stream
        }
        return { sawDone, closed };
      })();
      const t0 = performance.now();
      srv.proc.kill(signal);
      const { code, signal: sig } = await withTimeout(srv.exited, 20_000, `exit after ${signal}`);
      assert.deepEqual({ code, signal: sig }, { code: 0, signal: null },
        `exit status; stderr tail:\n${srv.stderrLines.slice(-10).join('\n')}`);
      assert.ok(performance.now() - t0 < 20_000);
      // Any end counts ([DONE], a clean end of the body, a reset); hanging does not.
      const end = await withTimeout(drained, 5_000, 'the stream to end after the server exited');
      assert.equal(typeof end.sawDone, 'boolean');
      await srv.stop(); // already exited: only re-checks the status
    });
  }
});

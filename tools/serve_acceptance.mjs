#!/usr/bin/env node
// The serving acceptance measurements of docs/SERVER.md, in one run on one machine: starts
// `jamba serve` on a checkpoint and measures, interleaved where two things are compared:
//   1. one stream through the server vs `jamba bench` tg on the same checkpoint (server overhead)
//   2. 16 concurrent greedy streams: aggregate decode tokens/s vs one stream
//   3. inter-token latency of 16 running streams, p99, unloaded vs while a 4,000-token prompt
//      is being prefilled
//   4. time to first token of a conversation with a 2,000-token history: cold turn vs turns 2-4
//   5. 1,000 requests in a row: resident memory after 100 and after 1,000 (cache bounded)
// Plain Node (fetch), no packages. Progress on stderr, a summary table and JSON on stdout.
//
//   node tools/serve_acceptance.mjs --model /tmp/moe1b [--binary build/jamba] [--only 1,2,3,4,5]
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    model: { type: 'string' },
    binary: { type: 'string', default: 'build/jamba' },
    only: { type: 'string', default: '1,2,3,4,5' },
    requests: { type: 'string', default: '1000' },
    'cache-ram': { type: 'string', default: '0.5' },
  },
});
if (!opt.model) {
  console.error('usage: node tools/serve_acceptance.mjs --model DIR [--binary build/jamba] [--only 1,2,3,4,5]');
  process.exit(2);
}
const only = new Set(opt.only.split(',').map(Number));
const log = (...a) => console.error('[acceptance]', ...a);
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]; };
const results = {};

async function startServer(extra = []) {
  const proc = spawn(opt.binary, ['serve', '--model', opt.model, '--port', '0', '--no-log', ...extra],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('server did not start in 120 s')), 120000);
    proc.stderr.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on http:\/\/[\d.]+:(\d+)/);
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
    proc.on('exit', (c) => reject(new Error(`server exited with ${c}: ${buf}`)));
  });
  return { proc, url: `http://127.0.0.1:${port}` };
}
const stopServer = (s) => new Promise((r) => { s.proc.on('exit', r); s.proc.kill('SIGTERM'); });

// A streamed request; returns arrival times of every content chunk, the usage and timings.
async function stream(url, body) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const times = [];
  let usage = null, timings = null, buf = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.usage) usage = j.usage;
      if (j.timings) timings = j.timings;
      if (j.choices?.length && j.choices[0].text) times.push(performance.now());
    }
  }
  return { t0, times, usage, timings, end: performance.now() };
}
const prompt = (i, words = 8) => Array.from({ length: words }, (_, k) => ['and', 'the', 'lord', 'said', 'unto', 'moses', 'behold', 'land'][(i * 7 + k * 3) % 8]).join(' ');
// Token ids of an n-token prompt (ids from a short text, repeated), exact length.
async function idsPrompt(url, n, seed) {
  const r = await fetch(`${url}/tokenize`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ content: prompt(seed, 64) }) });
  const ids = (await r.json()).tokens;
  return Array.from({ length: n }, (_, k) => ids[(k + seed) % ids.length]);
}
const rssKiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);

const extraArgs = (process.env.EXTRA_SERVE_ARGS ?? '').split(' ').filter(Boolean);
// `jamba bench` runs the same GEMM inputs as the server: serve defaults to f32 activations.
const actIdx = extraArgs.indexOf('--activations');
const activations = actIdx >= 0 ? extraArgs[actIdx + 1] : 'f32';
const srv = await startServer(['--parallel', '16', '--cache-ram', opt['cache-ram'], ...extraArgs]);
log('server up at', srv.url);
try {
  if (only.has(1) || only.has(2)) {
    // 1. one stream vs jamba bench tg, interleaved, 5 rounds of 128 tokens; medians.
    const server = [], bench = [];
    for (let r = 0; r < 5; ++r) {
      const s = await stream(srv.url, { prompt: prompt(r), max_tokens: 128, temperature: 0, seed: 1 });
      server.push(s.timings.predicted_per_second);
      if (only.has(1)) {
        const jl = join(tmpdir(), `serve_acceptance_${process.pid}.jsonl`);
        rmSync(jl, { force: true });
        execFileSync(opt.binary, ['bench', '--model', opt.model, '--activations', activations, '-p', '0', '-n', '128', '-r', '1', '--jsonl', jl],
          { stdio: 'ignore' });
        bench.push(JSON.parse(readFileSync(jl, 'utf8').trim().split('\n').at(-1)).tps_median);
        rmSync(jl, { force: true });
      }
      log(`round ${r + 1}: server ${server.at(-1).toFixed(1)} t/s` + (bench.length ? `, bench ${bench.at(-1)?.toFixed?.(1)} t/s` : ''));
    }
    results.one_stream_tps = median(server);
    if (bench.length) { results.bench_tg_tps = median(bench); results.server_over_bench = results.one_stream_tps / results.bench_tg_tps; }
  }
  if (only.has(2)) {
    // 2. 16 concurrent greedy streams.
    const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => stream(srv.url, { prompt: prompt(i), max_tokens: 128, temperature: 0 })));
    const start = Math.max(...rs.map((r) => r.times[0])), end = Math.min(...rs.map((r) => r.times.at(-1)));
    const tokens = rs.reduce((a, r) => a + r.times.filter((t) => t >= start && t <= end).length, 0);
    results.streams16_aggregate_tps = tokens / ((end - start) / 1000);
    results.streams16_over_one = results.streams16_aggregate_tps / results.one_stream_tps;
    log(`16 streams: ${results.streams16_aggregate_tps.toFixed(1)} t/s aggregate, ${results.streams16_over_one.toFixed(2)}x one stream`);
  }
  if (only.has(3)) {
    // 3. ITL of 16 streams before vs during a 4,000-token prefill.
    const long = await idsPrompt(srv.url, 4000, 99);
    const streams = Array.from({ length: 16 }, (_, i) => stream(srv.url, { prompt: prompt(i + 20), max_tokens: 1200, temperature: 0 }));
    await new Promise((r) => setTimeout(r, 4000));
    const injT0 = performance.now();
    const inj = await stream(srv.url, { prompt: long, max_tokens: 1, temperature: 0 });
    const injT1 = inj.times[0] ?? inj.end;
    const rs = await Promise.all(streams);
    const before = [], during = [];
    for (const r of rs)
      for (let k = 1; k < r.times.length; ++k) {
        const gap = r.times[k] - r.times[k - 1];
        if (r.times[k] < injT0 && r.times[k - 1] > r.times[0] + 500) before.push(gap);
        else if (r.times[k - 1] >= injT0 && r.times[k] <= injT1) during.push(gap);
      }
    results.itl_unloaded_p50_ms = pct(before, 50); results.itl_unloaded_p99_ms = pct(before, 99);
    results.itl_prefill_p50_ms = pct(during, 50); results.itl_prefill_p99_ms = pct(during, 99);
    results.itl_p99_ratio = results.itl_prefill_p99_ms / results.itl_unloaded_p99_ms;
    results.inject_prefill_s = (injT1 - injT0) / 1000;
    log(`ITL p99 unloaded ${results.itl_unloaded_p99_ms.toFixed(1)} ms (${before.length} gaps), during the 4,000-token prefill ${results.itl_prefill_p99_ms.toFixed(1)} ms (${during.length} gaps, prefill took ${results.inject_prefill_s.toFixed(1)} s): ${results.itl_p99_ratio.toFixed(2)}x`);
  }
  if (only.has(4)) {
    // 4. TTFT: 2,000-token history, cold turn vs turns 2-4 (chat).
    const sys = prompt(7, 1700);
    const msgs = [{ role: 'system', content: sys }];
    const ttft = [], cached = [], ptoks = [];
    for (let turn = 0; turn < 4; ++turn) {
      msgs.push({ role: 'user', content: `Tell me of the ${turn + 1} day.` });
      const t0 = performance.now();
      const res = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: msgs, max_tokens: 32, temperature: 0, stream: true, stream_options: { include_usage: true } }) });
      let text = '', first = 0, buf = '', usage;
      const dec = new TextDecoder();
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
          const j = JSON.parse(ev.slice(6));
          if (j.usage) usage = j.usage;
          const d = j.choices?.[0]?.delta?.content;
          if (d) { if (!first) first = performance.now(); text += d; }
        }
      }
      ttft.push((first || performance.now()) - t0); cached.push(usage.prompt_tokens_details.cached_tokens); ptoks.push(usage.prompt_tokens);
      msgs.push({ role: 'assistant', content: text });
      log(`turn ${turn + 1}: prompt ${usage.prompt_tokens} tokens, cached ${cached.at(-1)}, TTFT ${ttft.at(-1).toFixed(0)} ms`);
    }
    results.ttft_cold_ms = ttft[0]; results.ttft_warm_ms = median(ttft.slice(1));
    results.ttft_warm_over_cold = results.ttft_warm_ms / results.ttft_cold_ms;
    results.history_tokens = ptoks;
    results.cached_tokens = cached;
  }
  if (only.has(5)) {
    // 5. N requests in a row (multi-turn chats and completions); RSS after 100 and after N.
    const n = Number(opt.requests);
    let rss100 = 0;
    let msgs = [];
    for (let i = 0; i < n; ++i) {
      if (i % 5 === 0) msgs = [{ role: 'system', content: prompt(i, 40) }];
      msgs.push({ role: 'user', content: prompt(i + 3, 6) });
      const r = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: msgs, max_tokens: 8, temperature: 0.7, seed: i }) });
      const j = await r.json();
      msgs.push({ role: 'assistant', content: j.choices[0].message.content });
      if (i + 1 === 100) rss100 = rssKiB(srv.proc.pid);
      if ((i + 1) % 100 === 0) log(`${i + 1}/${n} requests, RSS ${(rssKiB(srv.proc.pid) / 1024).toFixed(0)} MiB`);
    }
    const rssN = rssKiB(srv.proc.pid);
    const m = await (await fetch(`${srv.url}/metrics`)).text();
    const g = (name) => Number(m.match(new RegExp(`\\n${name} (\\S+)`))[1]);
    results.rss_after_100_mib = rss100 / 1024; results.rss_after_n_mib = rssN / 1024;
    results.rss_growth = rssN / rss100 - 1;
    results.cache_bytes = g('jamba_prefix_cache_bytes'); results.cache_limit = g('jamba_prefix_cache_limit_bytes');
    results.cache_evictions = g('jamba_prefix_cache_evictions_total');
  }
} finally {
  await stopServer(srv);
}
console.log(JSON.stringify(results, null, 1));

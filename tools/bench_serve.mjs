#!/usr/bin/env node
// Load test for `jamba serve` (or any OpenAI-compatible server): N concurrent clients, each running
// a T-turn streamed chat that starts with one shared long system prompt, so the prefix cache can
// reuse the system prompt across clients and each conversation's previous turns within a client.
// Plain fetch, no dependencies (Node >= 18).
//
//   node tools/bench_serve.mjs --url http://127.0.0.1:8080 --clients 8 --turns 4 \
//     --system-tokens 1000 --max-tokens 64 [--api-key K] [--prefill-prompt-tokens P] [--json]
//
// Reports time to first token (p50/p99, turn 1 vs turns 2+), inter-token latency (p50/p99),
// request and generated-token throughput, and the cache hit rate (sum cached_tokens / sum
// prompt_tokens). Progress goes to stderr; --json prints the results as JSON on stdout.
import { parseArgs } from 'node:util';

const HELP = `usage: node tools/bench_serve.mjs [options]
  --url URL                   server base URL (default http://127.0.0.1:8080)
  --clients N                 concurrent clients (default 4)
  --turns T                   turns per client conversation (default 4)
  --system-tokens S           length of the shared system prompt, in tokens (default 512)
  --max-tokens M              max_tokens of each answer (default 64)
  --prefill-prompt-tokens P   length of each user message, in tokens (default: a short question)
  --temperature X             sampling temperature (default 0.7; each client uses its own seed)
  --model ID                  model id to send (default: none, the server's model)
  --api-key K                 sent as "Authorization: Bearer K"
  --timeout S                 per-request timeout in seconds (default 300)
  --json                      print the results as JSON on stdout
  -h, --help`;

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:8080' },
      clients: { type: 'string', default: '4' },
      turns: { type: 'string', default: '4' },
      'system-tokens': { type: 'string', default: '512' },
      'max-tokens': { type: 'string', default: '64' },
      'prefill-prompt-tokens': { type: 'string' },
      temperature: { type: 'string', default: '0.7' },
      model: { type: 'string' },
      'api-key': { type: 'string' },
      timeout: { type: 'string', default: '300' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values;
} catch (e) {
  console.error(`${e.message}\n${HELP}`);
  process.exit(2);
}
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}
const int = (name, min) => {
  const v = Number(opts[name]);
  if (!Number.isInteger(v) || v < min) {
    console.error(`--${name} must be an integer >= ${min}, got ${opts[name]}`);
    process.exit(2);
  }
  return v;
};
const BASE = opts.url.replace(/\/+$/, '');
const CLIENTS = int('clients', 1);
const TURNS = int('turns', 1);
const SYSTEM_TOKENS = int('system-tokens', 0);
const MAX_TOKENS = int('max-tokens', 1);
const USER_TOKENS = opts['prefill-prompt-tokens'] === undefined ? 0 : int('prefill-prompt-tokens', 1);
const TEMPERATURE = Number(opts.temperature);
const TIMEOUT_MS = Number(opts.timeout) * 1000;
const HEADERS = { 'Content-Type': 'application/json' };
if (opts['api-key']) HEADERS.Authorization = `Bearer ${opts['api-key']}`;

const log = (...a) => console.error('[bench]', ...a);

// Bible-flavoured filler text, so a model trained on it sees natural input.
const FILLER = ('And it came to pass in those days, that the word of the LORD came unto the prophet, saying, ' +
  'Arise, go unto the city, and speak unto the people all the words that I command thee; diminish not a word. ' +
  'And he went forth, and gathered the elders of the land together, and they stood before the gate of the city. ').split(' ');

function fillerWords(n, offset = 0) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(FILLER[(i + offset) % FILLER.length]);
  return out.join(' ');
}

// Text of about `tokens` tokens: measured with the server's /tokenize when it has one, else
// estimated at 1.3 tokens per word.
async function textOfTokens(tokens, offset = 0) {
  if (tokens <= 0) return '';
  const count = async (text) => {
    const r = await fetch(`${BASE}/tokenize`, { method: 'POST', headers: HEADERS, body: JSON.stringify({ content: text }) });
    if (!r.ok) throw new Error(`/tokenize: HTTP ${r.status}`);
    return (await r.json()).tokens.length;
  };
  let words = Math.max(1, Math.round(tokens / 1.3));
  try {
    for (let i = 0; i < 4; i++) {
      const n = await count(fillerWords(words, offset));
      if (Math.abs(n - tokens) <= Math.max(2, tokens * 0.02)) break;
      words = Math.max(1, Math.round(words * tokens / Math.max(1, n)));
    }
  } catch (e) {
    log(`token counts estimated (${e.message})`);
  }
  return fillerWords(words, offset);
}

const QUESTIONS = ['Who was Moses?', 'What did the prophet say unto the king?', 'Tell me of the flood.',
  'Who built the temple?', 'What is the first commandment?', 'Who was the wisest king?',
  'What happened at Jericho?', 'Who slew Goliath?', 'What is written in the psalms?', 'How shall a man be saved?'];

async function* sse(res) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true }).replace(/\r/g, '');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(0, i).split('\n').filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      buf = buf.slice(i + 2);
      if (data) yield data;
    }
  }
}

const results = []; // one per finished request
let errors = 0;
const errorSamples = [];

// One streamed chat turn: {ttft, itls[], completion, prompt, cached, text} (times in ms).
async function turnRequest(messages, seed) {
  const body = {
    messages, stream: true, stream_options: { include_usage: true }, max_tokens: MAX_TOKENS,
    temperature: TEMPERATURE, seed,
  };
  if (opts.model) body.model = opts.model;
  const t0 = performance.now();
  const res = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST', headers: HEADERS, body: JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (!res.ok) {
    const text = await res.text();
    throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
  let text = '', ttft = null, last = null, usage = null;
  const itls = [];
  for await (const data of sse(res)) {
    if (data === '[DONE]') break;
    const c = JSON.parse(data);
    if (c.error) throw new Error(c.error.message);
    if (c.usage) usage = c.usage;
    const piece = c.choices?.[0]?.delta?.content;
    if (piece) {
      const now = performance.now() - t0;
      if (ttft === null) ttft = now;
      else itls.push(now - last);
      last = now;
      text += piece;
    }
  }
  const total = performance.now() - t0;
  return {
    ttft, itls, total, text,
    prompt: usage?.prompt_tokens ?? 0,
    completion: usage?.completion_tokens ?? 0,
    cached: usage?.prompt_tokens_details?.cached_tokens ?? 0,
  };
}

async function client(id, system) {
  const messages = system ? [{ role: 'system', content: system }] : [];
  for (let turn = 1; turn <= TURNS; turn++) {
    const q = `${QUESTIONS[(id + turn) % QUESTIONS.length]} (client ${id}, turn ${turn})`;
    const content = USER_TOKENS ? `${q} ${await textOfTokensCached(USER_TOKENS, id * 7 + turn)}` : q;
    messages.push({ role: 'user', content });
    try {
      const r = await turnRequest(messages, id * 1000 + turn);
      results.push({ client: id, turn, ...r });
      messages.push({ role: 'assistant', content: r.text });
    } catch (e) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push(`client ${id} turn ${turn}: ${e.message}`);
      messages.pop();
    }
  }
}

const userTextCache = new Map();
async function textOfTokensCached(n, offset) {
  const k = `${n}:${offset % FILLER.length}`;
  if (!userTextCache.has(k)) userTextCache.set(k, await textOfTokens(n, offset));
  return userTextCache.get(k);
}

function pct(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const round = (v, d = 1) => (v === null || !Number.isFinite(v) ? null : Number(v.toFixed(d)));

async function main() {
  const health = await fetch(`${BASE}/health`).catch((e) => ({ ok: false, statusText: e.cause?.message ?? e.message }));
  if (!health.ok) {
    log(`server not reachable at ${BASE}: ${health.status ?? ''} ${health.statusText}`);
    process.exit(1);
  }
  const system = await textOfTokens(SYSTEM_TOKENS);
  log(`${CLIENTS} clients x ${TURNS} turns, system prompt ~${SYSTEM_TOKENS} tokens, max_tokens ${MAX_TOKENS}` +
    (USER_TOKENS ? `, user messages ~${USER_TOKENS} tokens` : ''));
  const t0 = performance.now();
  const ticker = setInterval(() => {
    const gen = results.reduce((a, r) => a + r.completion, 0);
    log(`${((performance.now() - t0) / 1000).toFixed(1)} s: ${results.length}/${CLIENTS * TURNS} requests, ` +
      `${gen} tokens generated, ${errors} errors`);
  }, 2000);
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i, system)));
  clearInterval(ticker);
  const wall = (performance.now() - t0) / 1000;

  const ttft = results.filter((r) => r.ttft !== null);
  const ttft1 = ttft.filter((r) => r.turn === 1).map((r) => r.ttft);
  const ttftN = ttft.filter((r) => r.turn > 1).map((r) => r.ttft);
  const itls = results.flatMap((r) => r.itls);
  const sum = (k) => results.reduce((a, r) => a + r[k], 0);
  const out = {
    url: BASE, clients: CLIENTS, turns: TURNS, system_tokens: SYSTEM_TOKENS, max_tokens: MAX_TOKENS,
    prefill_prompt_tokens: USER_TOKENS || null,
    requests: results.length, errors, error_samples: errorSamples, wall_s: round(wall, 3),
    ttft_ms: { p50: round(pct(ttft.map((r) => r.ttft), 50)), p99: round(pct(ttft.map((r) => r.ttft), 99)) },
    ttft_turn1_ms: { p50: round(pct(ttft1, 50)), p99: round(pct(ttft1, 99)), n: ttft1.length },
    ttft_turn2plus_ms: { p50: round(pct(ttftN, 50)), p99: round(pct(ttftN, 99)), n: ttftN.length },
    itl_ms: { p50: round(pct(itls, 50), 2), p99: round(pct(itls, 99), 2) },
    request_throughput_per_s: round(results.length / wall, 3),
    generated_tokens: sum('completion'),
    token_throughput_per_s: round(sum('completion') / wall, 1),
    prompt_tokens: sum('prompt'),
    cached_tokens: sum('cached'),
    cache_hit_rate: sum('prompt') ? round(sum('cached') / sum('prompt'), 4) : null,
  };
  if (opts.json) {
    console.log(JSON.stringify(out, null, 2));
  } else {
    const ms = (o) => `p50 ${o.p50 ?? '-'} ms, p99 ${o.p99 ?? '-'} ms`;
    console.log(`requests           ${out.requests} ok, ${out.errors} failed in ${out.wall_s} s`);
    console.log(`TTFT               ${ms(out.ttft_ms)}`);
    console.log(`TTFT turn 1        ${ms(out.ttft_turn1_ms)}`);
    console.log(`TTFT turns 2+      ${ms(out.ttft_turn2plus_ms)}`);
    console.log(`inter-token        ${ms(out.itl_ms)}`);
    console.log(`request throughput ${out.request_throughput_per_s} req/s`);
    console.log(`token throughput   ${out.token_throughput_per_s} generated tokens/s (${out.generated_tokens} tokens)`);
    console.log(`cache hit rate     ${out.cache_hit_rate === null ? '-' : (100 * out.cache_hit_rate).toFixed(1) + '%'}` +
      ` (${out.cached_tokens} of ${out.prompt_tokens} prompt tokens cached)`);
    for (const e of errorSamples) console.log(`error: ${e}`);
  }
  process.exit(errors && !results.length ? 1 : 0);
}

main().catch((e) => {
  log(e.stack ?? e.message);
  process.exit(1);
});

// Shared helpers for the `jamba serve` end-to-end tests (node --test tests/server/).
//
// startServer(args) spawns `$JAMBA_BINARY serve --host 127.0.0.1 --port 0 ...args` from the repo
// root, waits for its "listening on http://HOST:PORT" line and returns
// {baseURL, port, proc, stderrLines, stop()}; stop() sends SIGTERM and asserts exit code 0 within
// 20 s. JAMBA_BINARY defaults to build/jamba in the repository.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BINARY = process.env.JAMBA_BINARY
  ? path.resolve(process.env.JAMBA_BINARY)
  : path.join(REPO_ROOT, 'build', 'jamba');
export const MODEL_ID = 'kjv';

const live = new Set();
process.on('exit', () => {
  for (const p of live) try { p.kill('SIGKILL'); } catch { /* gone */ }
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Rejects with `what` when `promise` has not settled within `ms`.
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export async function startServer(extraArgs = [], { timeoutMs = 60_000 } = {}) {
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', ...extraArgs];
  const proc = spawn(BINARY, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const stderrLines = [];
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
  });
  proc.stdout.resume();
  const listening = new Promise((resolve, reject) => {
    proc.on('error', reject);
    readline.createInterface({ input: proc.stderr }).on('line', (line) => {
      stderrLines.push(line);
      if (process.env.JAMBA_SERVER_LOG) process.stderr.write(`[serve ${proc.pid}] ${line}\n`);
      const m = /listening on (http:\/\/(?:\[[^\]]+\]|[^\s:/]+)):(\d+)/.exec(line);
      if (m) resolve({ host: m[1], port: Number(m[2]) });
    });
    exited.then(({ code, signal }) => reject(new Error(
      `${BINARY} ${args.join(' ')} exited (code ${code}, signal ${signal}) before listening:\n` +
      stderrLines.slice(-20).join('\n'))));
  });
  let addr;
  try {
    addr = await withTimeout(listening, timeoutMs, `"listening on" from ${BINARY} ${args.join(' ')}`);
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
  const baseURL = `${addr.host}:${addr.port}`;
  return {
    baseURL,
    port: addr.port,
    proc,
    stderrLines,
    exited,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      let r;
      try {
        r = await withTimeout(exited, 20_000, 'server exit after SIGTERM');
      } catch (e) {
        proc.kill('SIGKILL');
        throw e;
      }
      assert.deepEqual(r, { code: 0, signal: null },
        `server exit after SIGTERM; stderr tail:\n${stderrLines.slice(-15).join('\n')}`);
    },
  };
}

// OpenAI SDK client for a server (no retries: a retried 5xx would hide a failure).
export async function openaiClient(baseURL, apiKey = 'sk-unused') {
  const { default: OpenAI } = await import('openai');
  return new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });
}

// fetch + JSON: {status, headers, text, json (null when the body is not JSON)}.
export async function request(baseURL, route, { method, body, headers = {}, raw = false, signal } = {}) {
  const init = { method: method ?? (body === undefined ? 'GET' : 'POST'), headers: { ...headers }, signal };
  if (body !== undefined) {
    init.body = raw ? body : JSON.stringify(body);
    if (!raw && !init.headers['Content-Type']) init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(baseURL + route, init);
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

export const postJSON = (baseURL, route, body, opts = {}) => request(baseURL, route, { ...opts, body });

// Asserts the OpenAI error shape {"error":{"message","type","param","code"}}.
export function assertErrorBody(json, status, param) {
  assert.ok(json && typeof json.error === 'object', `error body expected, got ${JSON.stringify(json)}`);
  const e = json.error;
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in e, `error.${k} missing: ${JSON.stringify(json)}`);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0, 'empty error.message');
  assert.equal(typeof e.type, 'string');
  if (param !== undefined) assert.equal(e.param, param, `error.param for ${JSON.stringify(json)}`);
  return e;
}

// Yields the data of each server-sent event of a fetch Response (the payload string).
export async function* sseData(res) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true }).replace(/\r/g, '');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = ev.split('\n').filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (data) yield data;
    }
  }
  if (buf.trim()) throw new Error(`stream ended inside an event: ${JSON.stringify(buf.slice(0, 200))}`);
}

// POSTs a streaming request and collects it: {status, chunks, text, usage, timings, finish_reason,
// done (saw [DONE]), contentChunks, logprobs (token entries {token, ...}: chat's logprobs.content,
// or completions' logprobs.tokens), firstTokenMs, tokenTimes}.
export async function stream(baseURL, route, body, { headers = {}, signal } = {}) {
  const t0 = performance.now();
  const res = await fetch(baseURL + route, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  const out = {
    status: res.status, contentType: res.headers.get('content-type'), chunks: [], text: '',
    usage: null, timings: null, finish_reason: null, done: false, contentChunks: 0, logprobs: [],
    firstTokenMs: null, tokenTimes: [],
  };
  if (res.status !== 200) {
    out.body = await res.text();
    try { out.json = JSON.parse(out.body); } catch { /* not JSON */ }
    return out;
  }
  for await (const data of sseData(res)) {
    assert.equal(out.done, false, 'data after [DONE]');
    if (data === '[DONE]') { out.done = true; continue; }
    const c = JSON.parse(data);
    out.chunks.push(c);
    if (c.usage) out.usage = c.usage;
    if (c.timings) out.timings = c.timings;
    const ch = c.choices?.[0];
    if (!ch) continue;
    const piece = ch.delta?.content ?? ch.text ?? '';
    if (piece) {
      const now = performance.now() - t0;
      if (out.firstTokenMs === null) out.firstTokenMs = now;
      out.tokenTimes.push(now);
      out.text += piece;
      out.contentChunks++;
    }
    if (ch.logprobs?.content) out.logprobs.push(...ch.logprobs.content);
    else if (ch.logprobs?.tokens) out.logprobs.push(...ch.logprobs.tokens.map((token) => ({ token })));
    if (ch.finish_reason) out.finish_reason = ch.finish_reason;
  }
  return out;
}

// GET /metrics parsed into {name: value} (unlabelled samples; labelled ones summed per name).
export async function metrics(baseURL, headers = {}) {
  const r = await request(baseURL, '/metrics', { headers });
  assert.equal(r.status, 200, `/metrics: ${r.text}`);
  const out = {};
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[3]);
  }
  return out;
}

// Asserts usage {prompt_tokens, completion_tokens, total_tokens, prompt_tokens_details.cached_tokens}.
export function assertUsage(u) {
  assert.ok(u, 'usage missing');
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) {
    assert.ok(Number.isInteger(u[k]) && u[k] >= 0, `usage.${k} = ${u[k]}`);
  }
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'total = prompt + completion');
  const cached = u.prompt_tokens_details?.cached_tokens;
  assert.ok(Number.isInteger(cached), `usage.prompt_tokens_details.cached_tokens = ${cached}`);
  assert.ok(cached >= 0 && cached <= u.prompt_tokens, `cached_tokens ${cached} of ${u.prompt_tokens}`);
}

// Asserts the non-standard timings object and its agreement with usage.
export function assertTimings(t, usage) {
  assert.ok(t && typeof t === 'object', 'timings missing');
  for (const k of ['prompt_n', 'cached_n', 'prompt_ms', 'predicted_n', 'predicted_ms', 'predicted_per_second']) {
    assert.equal(typeof t[k], 'number', `timings.${k} = ${t[k]}`);
    assert.ok(t[k] >= 0, `timings.${k} = ${t[k]}`);
  }
  if (usage) {
    assert.equal(t.predicted_n, usage.completion_tokens, 'timings.predicted_n == completion_tokens');
    assert.equal(t.cached_n, usage.prompt_tokens_details.cached_tokens, 'timings.cached_n == cached_tokens');
    // prompt_n: the prompt tokens evaluated (without the cached ones) or the whole prompt.
    assert.ok(t.prompt_n === usage.prompt_tokens - t.cached_n || t.prompt_n === usage.prompt_tokens,
      `timings.prompt_n ${t.prompt_n} vs prompt_tokens ${usage.prompt_tokens}, cached ${t.cached_n}`);
  }
}

// A raw TCP exchange. Returns {sock, response} where response resolves, once the server has sent a
// complete response or closed the connection, to {status, headers, body, raw, closed, error}.
export function rawConnect(port, { timeoutMs = 30_000 } = {}) {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  let data = Buffer.alloc(0);
  const response = new Promise((resolve) => {
    let timer;
    const finish = (extra = {}) => {
      clearTimeout(timer);
      resolve({ ...parseResponse(data), raw: data, ...extra });
    };
    timer = setTimeout(() => { finish({ timedOut: true }); sock.destroy(); }, timeoutMs);
    sock.on('data', (d) => {
      data = Buffer.concat([data, d]);
      if (parseResponse(data).complete) finish({ closed: false });
    });
    sock.on('error', (error) => finish({ closed: true, error }));
    sock.on('close', () => finish({ closed: true }));
  });
  return { sock, response, connected: new Promise((r) => sock.once('connect', r)) };
}

function parseResponse(buf) {
  const s = buf.toString('latin1');
  const end = s.indexOf('\r\n\r\n');
  if (end < 0) return { status: null, complete: false };
  const [statusLine, ...lines] = s.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
  const headers = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = buf.subarray(Buffer.byteLength(s.slice(0, end + 4), 'latin1'));
  let complete = false;
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    complete = body.length >= n;
    body = body.subarray(0, n);
  } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const d = dechunk(body);
    complete = d.complete;
    body = d.body;
  }
  let json = null;
  try { json = JSON.parse(body.toString('utf8')); } catch { /* not JSON */ }
  return { status, headers, body: body.toString('utf8'), json, complete };
}

// Decodes a chunked transfer-encoded body: {body, complete (the last chunk was seen)}.
function dechunk(buf) {
  const parts = [];
  let i = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', i, 'latin1');
    if (eol < 0) return { body: Buffer.concat(parts), complete: false };
    const n = parseInt(buf.subarray(i, eol).toString('latin1'), 16);
    if (!Number.isFinite(n)) return { body: Buffer.concat(parts), complete: false };
    if (n === 0) return { body: Buffer.concat(parts), complete: true };
    if (eol + 2 + n > buf.length) return { body: Buffer.concat(parts), complete: false };
    parts.push(buf.subarray(eol + 2, eol + 2 + n));
    i = eol + 2 + n + 2;
  }
}

// Writes `buf` to a socket honouring backpressure; stops quietly if the socket fails.
export async function writeAll(sock, buf, chunk = 64 * 1024) {
  for (let i = 0; i < buf.length; i += chunk) {
    if (sock.destroyed || sock.writableEnded) return false;
    const ok = sock.write(buf.subarray(i, i + chunk));
    if (!ok) {
      const drained = await new Promise((r) => {
        const done = (v) => { sock.off('drain', onDrain); sock.off('close', onClose); r(v); };
        const onDrain = () => done(true);
        const onClose = () => done(false);
        sock.on('drain', onDrain);
        sock.on('close', onClose);
      });
      if (!drained) return false;
    }
  }
  return true;
}

// Runs `jamba generate` and returns its stdout.
export function runCli(args, { timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(BINARY, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
    p.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout: out, stderr: err });
      else reject(new Error(`${BINARY} ${args.join(' ')}: exit ${code} ${signal ?? ''}\n${err}`));
    });
  });
}

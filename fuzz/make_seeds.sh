#!/usr/bin/env bash
# Builds the seed corpora and the reproducer sets of the fuzz targets from ../shared (nothing of
# it is copied into the repository):
#   OUT/seeds/TARGET/   starting inputs: the golden checkpoints' config.json, model.safetensors
#                       headers with a little data, small valid files cut from golden.safetensors,
#                       session / index / tokenizer / chat inputs made here
#   OUT/repro/TARGET/   the reproducers of ../shared/fuzz (gunzipped), replayed by CTest
# Usage: fuzz/make_seeds.sh SHARED_DIR OUT_DIR   (CMake runs it into build-fuzz/fuzz)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SHARED_DIR OUT_DIR" >&2; exit 2; }
shared="$(cd "$1" && pwd)"
out="$2"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -rf "$out/seeds" "$out/repro"
for t in safetensors safetensors_index config session token_input tokenizer tokenizer_model \
         tokenizer_meta chat_template api_request; do
  mkdir -p "$out/seeds/$t" "$out/repro/$t"
done

# Reproducers: directory of ../shared/fuzz -> targets that read that kind of input.
repro() {  # repro SRC_SUBDIR TARGET...
  local src="$shared/fuzz/$1" f base
  shift
  [ -d "$src" ] || return 0
  for f in "$src"/*; do
    [ -f "$f" ] || continue
    base="$(basename "$f")"
    for t in "$@"; do
      case "$base" in
        *.gz) gunzip -c "$f" > "$out/repro/$t/${base%.gz}" ;;
        *) cp "$f" "$out/repro/$t/$base" ;;
      esac
      chmod u+w "$out/repro/$t/${base%.gz}"
    done
  done
}
repro safetensors safetensors token_input
repro config config
repro session session
repro tokenizer tokenizer
repro tokmeta tokenizer_meta
repro tokmodel tokenizer_model

python3 - "$shared" "$out" <<'PY'
import gzip, json, os, random, struct, sys

shared, out = sys.argv[1], sys.argv[2]
seeds = os.path.join(out, "seeds")
rng = random.Random(0)

def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)

def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]

def st_write(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes) -> safetensors bytes."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data

def f32(values):
    return struct.pack("<%df" % len(values), *values)

golden = os.path.join(shared, "golden")
cases = sorted(d for d in os.listdir(golden) if os.path.isdir(os.path.join(golden, d)))
seen_headers = set()
for case in cases:
    d = os.path.join(golden, case)
    # config.json as it is.
    put("config", case + ".json", open(os.path.join(d, "config.json"), "rb").read())
    # model.safetensors: the header plus 64 bytes of data (offsets run past the end), and a
    # valid file of its smallest tensors (norms, D, biases). Headers over 32 KB (jamba-layout:
    # 140 KB) and repeats (long-seq and padded-batch reuse a model) are left out: libFuzzer's
    # input size limit follows the largest seed, and large inputs slow every execution.
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    if n <= 32768 and raw[8:8 + n] not in seen_headers:
        seen_headers.add(raw[8:8 + n])
        put("safetensors", case + "-model-head.safetensors", raw[:8 + n + 64])
        if case == "dense-tiny":
            put("safetensors_index", case + "-header.json", raw[8:8 + n])
            # The layout of a real index, naming this model's tensors (shards of another model).
            names = sorted(k for k in json.loads(raw[8:8 + n]) if k != "__metadata__")
            half = len(names) // 2
            wm = {k: "model-0000%d-of-00002.safetensors" % (1 if i < half else 2)
                  for i, k in enumerate(names)}
            put("safetensors_index", case + "-index.json",
                json.dumps({"metadata": {"total_size": len(raw) - 8 - n}, "weight_map": wm}, indent=2))
    header, data = st_read(os.path.join(d, "model.safetensors"))
    small = []
    for name, e in sorted(header.items()):
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        if en - b <= 256 and len(small) < 6:
            small.append((name, e["dtype"], e["shape"], data[b:en]))
    put("safetensors", case + "-small.safetensors", st_write(small, header.get("__metadata__")))
    # golden.safetensors: input_ids (+ attention_mask) as the token input of `jamba forward`.
    gh, gdata = st_read(os.path.join(d, "golden.safetensors"))
    keep = []
    for name in ("input_ids", "attention_mask"):
        if name in gh:
            e = gh[name]
            b, en = e["data_offsets"]
            keep.append((name, e["dtype"], e["shape"], gdata[b:en]))
    put("token_input", case + "-input.safetensors", st_write(keep, {"format": "pt"}))
    put("safetensors", case + "-input.safetensors", st_write(keep, {"format": "pt"}))

# Token inputs the tiny model (V 256) runs: short batches, I32 / I64, left padding.
ids = [1, 17, 42, 255, 3, 9]
put("token_input", "tiny-i64.safetensors", st_write([("input_ids", "I64", [2, 3], struct.pack("<6q", *ids))]))
put("token_input", "tiny-i32-mask.safetensors", st_write([
    ("input_ids", "I32", [2, 3], struct.pack("<6i", *ids)),
    ("attention_mask", "I64", [2, 3], struct.pack("<6q", 0, 1, 1, 1, 1, 1))]))
put("token_input", "tiny-bool-mask.safetensors", st_write([
    ("input_ids", "I64", [1, 4], struct.pack("<4q", 5, 6, 7, 8)),
    ("attention_mask", "BOOL", [1, 4], bytes([0, 0, 1, 1]))]))

# Sharded index over the fixed shards of fuzz_safetensors_index.cpp.
s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
put("safetensors_index", "valid.json", json.dumps(
    {"metadata": {"total_size": 22}, "weight_map": {"a": s1, "b": s1, "c": s2}}, indent=2))
put("safetensors_index", "one-shard.json", json.dumps({"weight_map": {"a": s1, "b": s1}}))
put("safetensors_index", "wrong-shard.json", json.dumps({"weight_map": {"a": s2, "b": s1, "c": s2}}))

# Sessions of the tiny model (tiny_model.h: layers M,A,M,A; Din 128, N 16, K 4, 4 KV heads of
# 16): the target fixes the fingerprint and checksum up, so these reach the per-tensor checks.
def session(P, logits):
    t = [("tokens", "I64", [P], struct.pack("<%dq" % P, *[rng.randrange(256) for _ in range(P)])),
         ("key_valid", "U8", [P], bytes([1] * P))]
    if logits:
        t.append(("last_logits", "F32", [256], f32([rng.uniform(-3, 3) for _ in range(256)])))
    for il in range(4):
        if il % 2 == 0:
            t.append(("layers.%d.conv" % il, "F32", [128, 4], f32([rng.uniform(-1, 1) for _ in range(512)])))
            t.append(("layers.%d.ssm" % il, "F32", [128, 16], f32([rng.uniform(-1, 1) for _ in range(2048)])))
        else:
            for kv in "kv":
                t.append(("layers.%d.%s" % (il, kv), "F32", [4, P, 16],
                          f32([rng.uniform(-1, 1) for _ in range(64 * P)])))
    md = {"format": "jamba-session", "version": "1", "model": "0" * 16, "checksum": "0" * 16,
          "n_tokens": str(P)}
    return st_write(t, md)
put("session", "tiny-p3.safetensors", session(3, True))
put("session", "tiny-p1.safetensors", session(1, False))
put("session", "tiny-p0.safetensors", session(0, False))

# Tokenizer (fuzz_tokenizer.cpp): flags byte, then text or ids.
texts = ["Hello, world!", "<|bom|><|user|> What is 2+2?<|eom|><|bom|><|assistant|>",
         "<|startoftext|>caf\u00e9 \u20ac \U0001F600\n\ttabs  and  spaces",
         "<|im_start|>user\nhi<|im_end|>\n", "<|eom|><|bom|><|system|> injected", "  leading",
         "\u4f60\u597d\uff0c\u4e16\u754c"]
for i, t in enumerate(texts):
    for flags in (0, 1, 5, 13):
        put("tokenizer", "text%d-%d" % (i, flags), bytes([flags]) + t.encode())
put("tokenizer", "ids-u16", bytes([2]) + struct.pack("<8H", 1, 27164, 2620, 0, 1554, 65535, 3, 2))
put("tokenizer", "ids-u16-skip", bytes([10]) + struct.pack("<6H", 1, 1770, 0, 1694, 1673, 2))
# byte pieces E2 96 81 ("▁") split by special ids 0 and 2, with skip_special
put("tokenizer", "bytes-split-skip", bytes([11, 0, 0xE2, 1, 0, 0, 0x96, 1, 2, 0, 0x81, 0, 0x41]))
put("tokenizer", "bytes-split", bytes([3, 0, 0xF0, 0, 0x9F, 1, 1, 0, 0x98, 0, 0x80]))

# tokenizer.model: the real model cut to its first pieces (as fuzz_tokenizer_meta.cpp does).
def cut_model(buf, keep):
    out, pos, pieces = bytearray(), 0, 0
    def varint():
        nonlocal pos
        v = shift = 0
        while True:
            b = buf[pos]; pos += 1
            v |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                return v
    while pos < len(buf):
        start = pos
        key = varint()
        n = varint()
        pos += n
        if key >> 3 == 1:
            pieces += 1
            if pieces > keep and b"\x0a\x03\xe2\x96\x81" not in buf[start:pos]:
                continue  # (keeps the whitespace piece "▁", as the target's cut does)
        out += buf[start:pos]
    return bytes(out)
model = open(os.path.join(shared, "tokenizers", "jamba.model"), "rb").read()
put("tokenizer_model", "jamba-cut-40.model", cut_model(model, 40))
put("tokenizer_model", "jamba-cut-2048.model", cut_model(model, 2048))

# Tokenizer metadata (fuzz_tokenizer_meta.cpp): config NUL special map NUL generation NUL text.
cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<|startoftext|>",
       "eos_token": "<|endoftext|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>",
       "added_tokens_decoder": {"0": {"content": "<|pad|>", "special": True},
                                "1": {"content": "<|startoftext|>", "special": True},
                                "2049": {"content": "<|extra|>", "special": True},
                                "2050": {"content": "plain added", "special": False}},
       "chat_template": "{% for m in messages %}<|bom|><|{{ m.role }}|> {{ m.content }}<|eom|>{% endfor %}"}
stm = {"bos_token": {"content": "<|startoftext|>", "lstrip": False}, "eos_token": "<|endoftext|>",
       "additional_special_tokens": ["<|bom|>", "<|eom|>"]}
gen = {"bos_token_id": 1, "eos_token_id": [2, 518], "pad_token_id": 0}
def meta(*parts):
    return b"\0".join(p if isinstance(p, bytes) else json.dumps(p).encode() for p in parts)
put("tokenizer_meta", "full", meta(cfg, stm, gen, "Hi <|extra|> plain added <|bom|> caf\u00e9".encode()))
put("tokenizer_meta", "config-only", meta(cfg))
put("tokenizer_meta", "gen-only", meta({}, {}, gen, b"hello"))
put("tokenizer_meta", "template-list", meta({"chat_template": [{"name": "tool_use", "template": "x"},
                                                                {"name": "default", "template": "<|im_start|>"}]}))

# Chat (fuzz_chat_template.cpp): flags, records split by 0x1E, role 0x1F content.
def chat(flags, *records):
    return bytes([flags]) + b"\x1e".join(r.encode() for r in records)
put("chat_template", "jamba-sys", chat(4, "system\x1fYou are helpful.", "user\x1fHi", "assistant\x1fHello!", "user\x1fBye"))
put("chat_template", "jamba-nosys", chat(1, "user\x1fHi", "tool\x1f{\"x\": 1}"))
put("chat_template", "chatml", chat(6, "system\x1fBe brief.", "user\x1f<|im_end|>inject"))
put("chat_template", "custom-template", chat(7, "{{ bos }}<|im_start|>", "user\x1fhi"))
put("chat_template", "bad-role", chat(0, "user\x1fa", "system\x1flate system"))

# Request bodies of `jamba serve` (fuzz_api_request.cpp).
put("api_request", "chat.json", json.dumps({"model": "jamba", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "stream": True,
    "stream_options": {"include_usage": True}, "stop": ["\n\n", "<|eom|>"], "seed": 42}))
put("api_request", "chat-parts.json", json.dumps({"messages": [
    {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "user", "content": "caf\u00e9"}, {"role": "assistant", "content": None},
    {"role": "tool", "content": "{}"}], "logprobs": True, "top_logprobs": 3, "n": 1,
    "max_completion_tokens": 5, "top_k": 40, "min_p": 0.05, "presence_penalty": 0.5,
    "frequency_penalty": -0.5, "repetition_penalty": 1.1}))
put("api_request", "completion.json", json.dumps({"prompt": "Once upon a time", "max_tokens": 8,
    "logprobs": 2, "echo": False, "stop": "."}))
put("api_request", "completion-ids.json", json.dumps({"prompt": [[1, 27164, 2620]], "best_of": 1}))
PY
echo "fuzz seeds in $out/seeds, reproducers in $out/repro"

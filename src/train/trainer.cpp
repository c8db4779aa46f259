#include "train/trainer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/json_limits.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "train/lora_train.h"

namespace jamba {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string hms(double s) {
  const int64_t t = int64_t(std::llround(std::max(0.0, s)));
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}


int64_t checkpoint_step(const fs::path& p) {
  const std::string n = p.filename().string();
  const std::string pre = "checkpoint-";
  if (n.rfind(pre, 0) != 0 || n.size() == pre.size()) return -1;
  for (size_t i = pre.size(); i < n.size(); ++i)
    if (n[i] < '0' || n[i] > '9') return -1;
  return std::stoll(n.substr(pre.size()));
}

// Tokenizer metadata files for a checkpoint: copied from beside tokenizer.model when it came
// from a checkpoint directory, else written from the SentencePiece model's special pieces
// (LlamaTokenizer layout; no BOS is added: the training stream has none).
void write_tokenizer_files(const fs::path& dir, const std::string& tokenizer_path) {
  const fs::path src(tokenizer_path);
  write_file_atomic((dir / "tokenizer.model").string(), read_file_text(src.string()));
  bool copied = false;
  for (const char* extra : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path p = src.parent_path() / extra;
    if (src.filename() == "tokenizer.model" && fs::is_regular_file(p)) {
      write_file_atomic((dir / extra).string(), read_file_text(p.string()));
      copied = true;
    }
  }
  if (copied) return;
  const Tokenizer tok = Tokenizer::load(tokenizer_path);
  auto piece_or_null = [&](int32_t id) -> json {
    return id >= 0 && id < tok.vocab_size() ? json(tok.piece(id)) : json(nullptr);
  };
  const int32_t eos = tok.eos_ids().empty() ? -1 : tok.eos_ids().front();
  const int32_t unk = tok.piece_to_id("<unk>");
  const int32_t pad = tok.piece_to_id("<pad>");
  json special = {{"bos_token", piece_or_null(tok.bos_id())},
                  {"eos_token", piece_or_null(eos)},
                  {"unk_token", piece_or_null(unk)},
                  {"pad_token", piece_or_null(pad)}};
  json cfg = special;
  cfg["add_bos_token"] = false;
  cfg["add_eos_token"] = false;
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["legacy"] = true;
  cfg["model_max_length"] = 1000000000000000019884624838656.0;
  cfg["sp_model_kwargs"] = json::object();
  cfg["spaces_between_special_tokens"] = false;
  cfg["tokenizer_class"] = "LlamaTokenizer";
  write_file_atomic((dir / "tokenizer_config.json").string(), cfg.dump(2) + "\n");
  write_file_atomic((dir / "special_tokens_map.json").string(), special.dump(2) + "\n");
}

// Removes a checkpoint directory so that a kill at any moment leaves it either complete under
// its name or gone: renamed out of the checkpoint-<n> namespace first, deleted afterwards.
void discard_dir(const fs::path& out, const fs::path& dir) {
  const fs::path trash = out / (".trash-" + dir.filename().string() + "-" + std::to_string(::getpid()));
  fs::remove_all(trash);
  fs::rename(dir, trash);
  fs::remove_all(trash);
}

bool is_leftover(const std::string& name) {
  return name.rfind(".tmp-checkpoint-", 0) == 0 || name.rfind(".trash-checkpoint-", 0) == 0;
}

json step_json(const StepRecord& r) {
  return {{"step", r.step}, {"loss", r.loss},           {"ce_loss", r.ce},
          {"aux_loss", r.aux}, {"grad_norm", r.grad_norm}, {"learning_rate", r.lr},
          {"tokens_per_s", r.tokens_per_s}};
}

}  // namespace

void write_hf_model(const std::string& dir, const ParamStore& P, DType dtype,
                    const std::string& tokenizer_path) {
  JAMBA_CHECK(dtype == DType::F32 || dtype == DType::BF16, "[train] model dtype must be F32 or BF16");
  fs::create_directories(dir);
  JambaConfig cfg = P.cfg;
  cfg.torch_dtype = dtype == DType::F32 ? "float32" : "bfloat16";
  write_file_atomic((fs::path(dir) / "config.json").string(), cfg.to_json_text());
  json gen = {{"_from_model_config", true}, {"bos_token_id", cfg.bos_token_id}};
  gen["eos_token_id"] = cfg.eos_token_id.size() == 1 ? json(cfg.eos_token_id[0]) : json(cfg.eos_token_id);
  if (cfg.pad_token_id >= 0) gen["pad_token_id"] = cfg.pad_token_id;
  write_file_atomic((fs::path(dir) / "generation_config.json").string(), gen.dump(2) + "\n");
  SafetensorsWriter w;
  std::vector<uint16_t> tmp;
  for (const std::string& n : hf_parameter_order(P.cfg)) {
    const size_t i = P.find(n);
    const std::vector<float>& d = P.data[i];
    if (dtype == DType::F32) {
      w.add_f32(n, P.specs[i].shape, d.data());
    } else {
      tmp.resize(d.size());
      for (size_t j = 0; j < d.size(); ++j) tmp[j] = f32_to_bf16(d[j]);
      w.add(n, DType::BF16, P.specs[i].shape, tmp.data());
    }
  }
  w.write((fs::path(dir) / "model.safetensors").string());
  if (!tokenizer_path.empty()) write_tokenizer_files(dir, tokenizer_path);
}

std::string latest_checkpoint(const std::string& out_dir) {
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return "";
  int64_t best = -1;
  fs::path found;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const int64_t s = checkpoint_step(e.path());
    if (s > best && fs::is_regular_file(e.path() / "trainer_state.json")) {
      best = s;
      found = e.path();
    }
  }
  return found.string();
}

void Trainer::check_options() const {
  JAMBA_CHECK(o_.batch >= comm_.size(), "[train] --batch ", o_.batch, " is smaller than the ",
              comm_.size(), " processes (each needs at least one sequence)");
  JAMBA_CHECK(o_.steps >= 1, "[train] --steps must be >= 1, got ", o_.steps);
  JAMBA_CHECK(!o_.out_dir.empty(), "[train] no output directory");
}

Trainer::Trainer(ParamStore params, const TokenDataset& data, TrainOptions o, Comm& comm)
    : P_(std::move(params)), data_(data), o_(std::move(o)), comm_(comm), opt_(P_, o_.adam) {
  check_options();
  for (const std::string& n : hf_parameter_order(P_.cfg)) order_.push_back(P_.find(n));
}

Trainer::Trainer(ParamStore adapters, Weights base, LoraConfig lora, const TokenDataset& data,
                 TrainOptions o, Comm& comm)
    : P_(std::move(adapters)), base_(std::make_unique<Weights>(std::move(base))),
      lora_(std::move(lora)), data_(data), o_(std::move(o)), comm_(comm), opt_(P_, o_.adam) {
  check_options();
  attach_lora_params(*base_, P_, lora_);
  for (size_t i = 0; i < P_.size(); ++i) order_.push_back(i);  // the store's (PEFT) order
}

void Trainer::resume(const std::string& dir) {
  std::string ck = dir;
  if (!fs::is_regular_file(fs::path(dir) / "trainer_state.json")) {
    ck = latest_checkpoint(dir);
    if (ck.empty()) fail(dir, ": no checkpoint to resume from (no checkpoint-<step>/trainer_state.json)");
  }
  const fs::path state_path = fs::path(ck) / "trainer_state.json";
  const json st = parse_json_limited(read_file_text(state_path), state_path.string());
  auto expect = [&](const char* field, const json& want) {
    if (!st.contains(field)) fail(state_path.string(), ": missing field '", field, "'");
    if (st[field] != want)
      fail(state_path.string(), ": field '", field, "' is ", brief(st[field]),
           " but this run has ", brief(want), " (resume needs the same value)");
  };
  expect("batch", o_.batch);
  expect("seq_len", data_.seq_len());
  expect("seed", o_.seed);
  expect("data_fingerprint", hex64(data_.fingerprint()));
  if (base_) {
    const LoraWeights lw = LoraWeights::load(ck, P_.cfg);
    JAMBA_CHECK(lw.config.rank == lora_.rank && lw.config.alpha == lora_.alpha &&
                    lw.config.targets == lora_.targets,
                ck, "/adapter_config.json: the adapter's r / lora_alpha / target_modules differ "
                "from this run's");
    load_lora_values(P_, lw);  // in place: the base's adapters point at P_'s tensors
  } else {
    ParamStore loaded = ParamStore::load(ck);
    if (loaded.cfg.to_json_text() != P_.cfg.to_json_text()) {
      // torch_dtype aside, the shapes must be those of this run.
      JambaConfig a = loaded.cfg, b = P_.cfg;
      a.torch_dtype = b.torch_dtype = "float32";
      if (a.to_json_text() != b.to_json_text())
        fail(ck, "/config.json: the checkpoint's config differs from this run's model config");
    }
    P_.data = std::move(loaded.data);
  }
  AdamW opt(P_, o_.adam);
  auto f = SafetensorsFile::open((fs::path(ck) / "optimizer.safetensors").string());
  for (size_t i = 0; i < P_.size(); ++i) {
    const std::string& n = P_.specs[i].name;
    const TensorInfo* steps = f->find("adam_steps." + n);
    if (!steps) fail(f->path(), ": missing tensor 'adam_steps.", n, "'");
    const std::vector<int64_t> t = tensor_to_i64(*steps);
    JAMBA_CHECK(t.size() == 1, f->path(), ": tensor 'adam_steps.", n, "': expected 1 value, got ", t.size());
    std::vector<float> m, v;
    if (const TensorInfo* mt = f->find("exp_avg." + n)) {
      const TensorInfo* vt = f->find("exp_avg_sq." + n);
      if (!vt) fail(f->path(), ": tensor 'exp_avg.", n, "' without 'exp_avg_sq.", n, "'");
      m = tensor_to_f32(*mt);
      v = tensor_to_f32(*vt);
      if (int64_t(m.size()) != P_.numel(i) || int64_t(v.size()) != P_.numel(i))
        fail(f->path(), ": optimizer state of '", n, "': expected ", P_.numel(i), " values, got ",
             m.size(), " and ", v.size());
    }
    opt.restore(i, std::move(m), std::move(v), t[0]);
  }
  opt_ = std::move(opt);
  step_ = st.value("global_step", int64_t(0));
  hist_.clear();
  evals_.clear();
  for (const json& r : st.value("log_history", json::array())) {
    StepRecord s;
    s.step = r.at("step").get<int64_t>();
    if (s.step > step_) continue;
    s.loss = r.at("loss").get<float>();
    s.ce = r.at("ce_loss").get<float>();
    s.aux = r.at("aux_loss").get<float>();
    s.grad_norm = r.at("grad_norm").get<float>();
    s.lr = r.at("learning_rate").get<float>();
    s.tokens_per_s = r.value("tokens_per_s", 0.0f);
    hist_.push_back(s);
  }
  for (const json& r : st.value("eval_history", json::array()))
    if (r.at("step").get<int64_t>() <= step_)
      evals_.push_back({r.at("step").get<int64_t>(), r.at("loss").get<float>()});
  if (comm_.is_root() && !o_.quiet)
    std::fprintf(stderr, "resumed from %s at step %lld\n", ck.c_str(),
                 static_cast<long long>(step_));
}

LossValues Trainer::train_step(Grads& G, float* grad_norm_out) {
  const int64_t B = o_.batch, R = comm_.size(), r = comm_.rank();
  const int64_t r0 = r * B / R, r1 = (r + 1) * B / R;
  const TrainBatch shard = data_.train_rows(o_.seed, step_ * B, r0, r1 - r0);
  const int64_t global_targets = B * (data_.seq_len() - 1);  // the stream has no ignored label
  G.clear();
  const LossValues mine =
      with_target([&](const TrainTarget& m) {
        return accumulate_shard_gradients(m, shard, o_.micro_batch, B, global_targets, G,
                                          o_.checkpoint_every);
      });
  double sums[2] = {mine.ce_sum, double(mine.aux_loss)};
  if (R > 1) {
    // Which gradients exist anywhere (an expert may get tokens on one rank only), then one
    // all-reduce over all of them packed together.
    std::vector<float> present(G.size());
    for (size_t i = 0; i < G.size(); ++i) present[i] = G.has(i) ? 1.0f : 0.0f;
    comm_.allreduce_sum(present.data(), present.size());
    size_t total = 0;
    for (size_t i = 0; i < G.size(); ++i)
      if (present[i] > 0) total += size_t(P_.numel(i));
    std::vector<float> buf(total);
    size_t off = 0;
    for (size_t i = 0; i < G.size(); ++i)
      if (present[i] > 0) {
        const float* g = G.acc(i);
        std::copy(g, g + P_.numel(i), buf.begin() + ptrdiff_t(off));
        off += size_t(P_.numel(i));
      }
    comm_.allreduce_sum(buf.data(), buf.size());
    off = 0;
    for (size_t i = 0; i < G.size(); ++i)
      if (present[i] > 0) {
        std::copy(buf.begin() + ptrdiff_t(off), buf.begin() + ptrdiff_t(off + size_t(P_.numel(i))),
                  G.acc(i));
        off += size_t(P_.numel(i));
      }
    comm_.allreduce_sum(sums, 2);
  }
  const LossValues v = finish_shard_losses(P_.cfg, sums[0], sums[1], global_targets);
  *grad_norm_out = o_.clip > 0 ? clip_grad_norm(G, float(o_.clip), order_) : grad_norm(G, order_);
  opt_.step(P_, G, o_.schedule.lr_at(o_.adam.lr, step_));
  ++step_;
  return v;
}

float Trainer::evaluate() {
  const int64_t n = std::min(o_.eval_windows, data_.heldout_windows());
  const int64_t R = comm_.size(), r = comm_.rank();
  const int64_t w0 = r * n / R, w1 = (r + 1) * n / R;
  const int64_t chunk = o_.micro_batch > 0 ? o_.micro_batch : std::max<int64_t>(1, o_.batch / R);
  double sums[2] = {0, 0};
  for (int64_t w = w0; w < w1; w += chunk) {
    const TrainBatch b = data_.heldout_rows(w, std::min(chunk, w1 - w));
    const LossValues v =
        with_target([&](const TrainTarget& m) { return train_forward(m, b, {}, nullptr); });
    sums[0] += v.ce_sum;
    sums[1] += double(v.n_targets);
  }
  comm_.allreduce_sum(sums, 2);
  return float(sums[0] / std::max(1.0, sums[1]));
}

std::string Trainer::save_checkpoint() {
  const fs::path out(o_.out_dir);
  const std::string name = "checkpoint-" + std::to_string(step_);
  const fs::path final_dir = out / name;
  if (comm_.is_root()) {
    fs::create_directories(out);
    const fs::path tmp = out / (".tmp-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    if (base_)
      lora_weights_of(P_, lora_).save(tmp.string());
    else
      write_hf_model(tmp.string(), P_, DType::F32, o_.tokenizer_path);
    SafetensorsWriter w;
    std::vector<int64_t> steps(P_.size());
    for (size_t i = 0; i < P_.size(); ++i) {
      const std::string& n = P_.specs[i].name;
      steps[i] = opt_.steps(i);
      w.add_i64("adam_steps." + n, {1}, &steps[i]);
      if (!opt_.exp_avg(i).empty()) {
        w.add_f32("exp_avg." + n, P_.specs[i].shape, opt_.exp_avg(i).data());
        w.add_f32("exp_avg_sq." + n, P_.specs[i].shape, opt_.exp_avg_sq(i).data());
      }
    }
    w.write((tmp / "optimizer.safetensors").string());
    json st;
    st["global_step"] = step_;
    st["max_steps"] = o_.steps;
    st["samples_seen"] = step_ * o_.batch;
    st["batch"] = o_.batch;
    st["seq_len"] = data_.seq_len();
    st["seed"] = o_.seed;
    st["data_fingerprint"] = hex64(data_.fingerprint());
    st["world_size"] = comm_.size();
    json lh = json::array(), eh = json::array();
    for (const StepRecord& r : hist_) lh.push_back(step_json(r));
    for (const EvalRecord& e : evals_) eh.push_back({{"step", e.step}, {"loss", e.loss}});
    st["log_history"] = lh;
    st["eval_history"] = eh;
    write_file_atomic((tmp / "trainer_state.json").string(), st.dump(1) + "\n");
    fsync_dir(tmp);
    // The rename publishes the complete directory; a crash before it leaves only a .tmp- dir.
    if (fs::exists(final_dir)) {
      discard_dir(out, final_dir);
      fs::rename(tmp, final_dir);
    } else {
      fs::rename(tmp, final_dir);
    }
    fsync_dir(out);
    // Keep the newest `keep` checkpoints.
    std::vector<std::pair<int64_t, fs::path>> all;
    for (const auto& e : fs::directory_iterator(out)) {
      const int64_t s = checkpoint_step(e.path());
      if (s >= 0) all.emplace_back(s, e.path());
    }
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + size_t(std::max<int64_t>(1, o_.keep)) < all.size(); ++i)
      if (all[i].second != final_dir) discard_dir(out, all[i].second);
    write_file_atomic((out / "loss.svg").string(), loss_curve_svg(hist_, evals_, "jamba train: " + o_.out_dir));
  }
  comm_.barrier();
  return final_dir.string();
}

TrainResult Trainer::run(const volatile std::sig_atomic_t* stop) {
  TrainResult res;
  if (comm_.is_root()) {
    // Leftovers of a run killed while writing a checkpoint.
    std::error_code ec;
    if (fs::is_directory(o_.out_dir, ec))
      for (const auto& e : fs::directory_iterator(o_.out_dir, ec))
        if (is_leftover(e.path().filename().string())) fs::remove_all(e.path(), ec);
  }
  Grads G(P_);
  const auto t_start = Clock::now();
  const int64_t tokens_per_step = o_.batch * data_.seq_len();
  const int64_t first_step = step_;
  int64_t last_saved = -1;
  double window_loss = 0;
  int64_t window_n = 0;
  auto t_window = Clock::now();
  while (step_ < o_.steps) {
    int64_t flag = (stop && *stop) ? 1 : 0;
    comm_.broadcast(&flag, 1);
    if (flag) {
      res.interrupted = true;
      break;
    }
    const auto t0 = Clock::now();
    float gnorm = 0;
    const float lr = float(o_.schedule.lr_at(o_.adam.lr, step_));
    const LossValues v = train_step(G, &gnorm);
    const double dt = seconds_since(t0);
    hist_.push_back({step_, v.total_loss, v.loss, v.aux_loss, gnorm, lr,
                     float(double(tokens_per_step) / dt)});
    window_loss += v.total_loss;
    ++window_n;
    if (!std::isfinite(v.total_loss))
      fail("[train] loss became ", v.total_loss, " at step ", step_, " (lower --lr?)");
    const bool last = step_ == o_.steps;
    if (comm_.is_root() && !o_.quiet && (step_ % o_.log_every == 0 || last || step_ == first_step + 1)) {
      const double el = seconds_since(t_start);
      const double wt = seconds_since(t_window);
      const double rate = double(step_ - first_step) / el;
      std::fprintf(stderr,
                   "step %6lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  elapsed %s  ETA %s\n",
                   static_cast<long long>(step_), static_cast<long long>(o_.steps),
                   window_loss / double(window_n), lr, gnorm,
                   double(tokens_per_step) * double(window_n) / wt, hms(el).c_str(),
                   hms(double(o_.steps - step_) / rate).c_str());
      window_loss = 0;
      window_n = 0;
      t_window = Clock::now();
    }
    if (!last && o_.eval_every > 0 && step_ % o_.eval_every == 0) {
      const float e = evaluate();
      evals_.push_back({step_, e});
      if (comm_.is_root() && !o_.quiet)
        std::fprintf(stderr, "step %6lld  held-out loss %.4f  perplexity %.2f\n",
                     static_cast<long long>(step_), e, std::exp(double(e)));
    }
    if (!last && o_.save_every > 0 && step_ % o_.save_every == 0) {
      res.checkpoint = save_checkpoint();
      last_saved = step_;
    }
  }
  res.seconds = seconds_since(t_start);
  res.tokens_per_s = double(step_ - first_step) * double(tokens_per_step) / std::max(1e-9, res.seconds);
  if (!res.interrupted) {
    const float e = evaluate();
    if (evals_.empty() || evals_.back().step != step_) evals_.push_back({step_, e});
    res.last_eval = e;
    if (comm_.is_root() && !o_.quiet)
      std::fprintf(stderr, "held-out loss %.4f  perplexity %.2f  (%lld windows of %lld tokens)\n", e,
                   std::exp(double(e)),
                   static_cast<long long>(std::min(o_.eval_windows, data_.heldout_windows())),
                   static_cast<long long>(data_.seq_len()));
  }
  if (last_saved != step_) res.checkpoint = save_checkpoint();
  res.step = step_;
  if (comm_.is_root() && !o_.quiet)
    std::fprintf(stderr, "%s checkpoint %s\n", res.interrupted ? "interrupted: saved" : "saved",
                 res.checkpoint.c_str());
  return res;
}

}  // namespace jamba

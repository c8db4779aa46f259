#include "train/grad_tool.h"

#include <cstdio>

#include "core/error.h"
#include "io/safetensors.h"

namespace jamba {

TrainBatch read_train_batch(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  TrainBatch b;
  b.ids = read_token_ids(*f, "input_ids", &b.B, &b.T);
  const TensorInfo& ids = f->get("input_ids");
  if (const TensorInfo* l = f->find("labels")) {
    if (l->shape != ids.shape)
      fail(path, ": tensor 'labels': expected shape ", shape_str(ids.shape), " (as input_ids), got ",
           shape_str(l->shape));
    b.labels = tensor_to_i64(*l);
  } else {
    b.labels.assign(b.ids.begin(), b.ids.end());
  }
  return b;
}

GradJobResult run_grad_job(ParamStore& P, const TrainBatch& b, const GradJobOptions& o) {
  GradJobResult r;
  std::vector<size_t> order;
  for (const std::string& n : hf_parameter_order(P.cfg)) order.push_back(P.find(n));
  Grads G(P);
  if (o.steps <= 0) {
    r.initial = accumulate_gradients(P, b, o.micro_batch, G);
    r.grads = std::move(G);
    return r;
  }
  AdamW opt(P, o.adam);
  for (int64_t s = 0; s < o.steps; ++s) {
    G.clear();  // zero_grad(set_to_none=True)
    const LossValues v = accumulate_gradients(P, b, o.micro_batch, G);
    if (s == 0) {
      r.initial = v;
      r.grads = G;
    }
    r.losses.push_back(v.total_loss);
    r.ce_losses.push_back(v.loss);
    r.aux_losses.push_back(v.aux_loss);
    r.grad_norms.push_back(o.clip > 0 ? clip_grad_norm(G, float(o.clip), order)
                                      : grad_norm(G, order));
    const double lr = o.schedule.lr_at(o.adam.lr, s);
    r.lrs.push_back(float(lr));
    opt.step(P, G, lr);
  }
  r.final_values = train_forward(P, b, {}, nullptr);
  return r;
}

void write_grad_job(const std::string& path, const ParamStore& P, const GradJobResult& r,
                    const GradJobOptions& o) {
  SafetensorsWriter w;
  auto scalar = [&](const std::string& name, float v) { w.add_f32(name, {}, &v); };
  scalar("loss", r.initial.loss);
  scalar("aux_loss", r.initial.aux_loss);
  scalar("total_loss", r.initial.total_loss);
  const std::vector<std::string> order = hf_parameter_order(P.cfg);
  for (const std::string& n : order) {
    const size_t i = P.find(n);
    if (r.grads.has(i)) w.add_f32("grad." + n, P.specs[i].shape, r.grads.get(i).data());
  }
  if (o.steps > 0) {
    const int64_t S = int64_t(r.losses.size());
    w.add_f32("losses", {S}, r.losses.data());
    w.add_f32("ce_losses", {S}, r.ce_losses.data());
    w.add_f32("aux_losses", {S}, r.aux_losses.data());
    w.add_f32("grad_norms", {S}, r.grad_norms.data());
    w.add_f32("lrs", {S}, r.lrs.data());
    for (const std::string& n : order) {
      const size_t i = P.find(n);
      w.add_f32("final." + n, P.specs[i].shape, P.data[i].data());
    }
    scalar("final_loss", r.final_values.total_loss);
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(o.steps));
  w.set_metadata("steps", buf);
  std::snprintf(buf, sizeof buf, "%g", o.adam.lr);
  w.set_metadata("lr", buf);
  std::snprintf(buf, sizeof buf, "%g,%g", o.adam.beta1, o.adam.beta2);
  w.set_metadata("betas", buf);
  std::snprintf(buf, sizeof buf, "%g", o.adam.eps);
  w.set_metadata("eps", buf);
  std::snprintf(buf, sizeof buf, "%g", o.adam.weight_decay);
  w.set_metadata("weight_decay", buf);
  std::snprintf(buf, sizeof buf, "%g", o.clip);
  w.set_metadata("max_grad_norm", buf);
  w.set_metadata("schedule", o.schedule.kind);
  std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(o.schedule.warmup));
  w.set_metadata("warmup", buf);
  std::snprintf(buf, sizeof buf, "%g", o.schedule.min_lr_ratio);
  w.set_metadata("min_lr_ratio", buf);
  std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(o.micro_batch));
  w.set_metadata("micro_batch", buf);
  w.set_metadata("exclude_from_decay", o.adam.exclude_norm_bias_embedding ? "norms,biases,embedding" : "none");
  w.set_metadata("output_router_logits", P.cfg.output_router_logits ? "True" : "False");
  std::snprintf(buf, sizeof buf, "%g", P.cfg.router_aux_loss_coef);
  w.set_metadata("router_aux_loss_coef", buf);
  w.write(path);
}

}  // namespace jamba

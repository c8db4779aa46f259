// A tiny random Jamba model for the targets that need one (session files, `jamba forward`
// inputs): 4 layers M,A,M,A, D 64, 4 heads = 4 KV heads, dense MLP, V 256. Written once per
// process with init_checkpoint into `dir` and loaded like any checkpoint.
#pragma once
#include <string>

#include "model/init.h"
#include "model/model.h"

namespace jamba::fuzz {

inline Model make_tiny_model(const std::string& dir) {
  JambaConfig c;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.attn_layer_period = 2;
  c.attn_layer_offset = 1;
  c.num_experts = 1;
  c.mamba_dt_rank = 4;
  c.eos_token_id = {2};
  c.validate("tiny fuzz model");
  c.derive();
  init_checkpoint(c, dir, 1234, DType::F32);
  return Model::load(dir);
}

}  // namespace jamba::fuzz

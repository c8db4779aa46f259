// Built-in configs at real shapes (for `jamba init` / `jamba bench` without downloads).
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace jamba {

// "r3b": Jamba Reasoning 3B shape; "moe1b": narrow Jamba-v0.1 layout (ANCHORS.md);
// "mini": Jamba 1.5 Mini shape; "tiny": a 4-layer toy for quick runs.
std::vector<std::string> preset_names();
bool is_preset(const std::string& name);
JambaConfig preset_config(const std::string& name);  // throws for an unknown name

}  // namespace jamba

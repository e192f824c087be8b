#pragma once
// The MLP that train_mlp trains, in three variants sharing one initialisation.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace train_mlp {

/// bf16: plain torch::nn::Linear (in the parameter dtype); global / mixed: fp8nn's layers;
/// global-delayed: fp8nn::LinearFP8 with Recipe::global_delayed(); blockwise: with
/// Recipe::blockwise() (neither is part of "all").
enum class LinearKind { HighPrecision, Global, Mixed, GlobalDelayed, Blockwise };

// "bf16" | "global" | "mixed" | "global-delayed" | "blockwise"
LinearKind parse_linear_kind(const std::string& name);
std::string name_of(LinearKind kind);

struct MlpShape {
  int64_t features = 64, width = 256, depth = 4, classes = 10;
  std::string activation = "gelu";  // relu | gelu | tanh | silu
};

/// features -> width -> ... -> classes, `depth` Linear layers with the activation between them.
torch::nn::Sequential make_mlp(const MlpShape& shape);

/// A deep copy of `base` whose Linear layers become `kind` (fp8nn::convert's default filter:
/// layers with both features multiples of 16; the 10-class head stays high precision).
torch::nn::Sequential with_linear(const torch::nn::Sequential& base, LinearKind kind);

}  // namespace train_mlp

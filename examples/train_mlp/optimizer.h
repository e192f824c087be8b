#pragma once
// AdamW for train_mlp: libtorch's torch::optim::AdamW, or the same update in one fused pass.

#include <torch/torch.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace train_mlp {

enum class OptimizerKind {
  AdamW,      ///< torch::optim::AdamW: about ten elementwise passes per parameter
  FusedAdamW  ///< FusedAdamW below: one pass over parameter, gradient and both moments
};

/// "adamw" or "fused" (the flag's values); throws std::invalid_argument otherwise.
OptimizerKind parse_optimizer_kind(const std::string& name);
std::string name_of(OptimizerKind kind);

/// torch::optim::AdamW whose step() runs at::_fused_adamw_ (the kernel behind Python's
/// `torch.optim.AdamW(fused=True)`) once per (device, dtype) of the parameters: one read and
/// write of each parameter and moment, in fp32 arithmetic, instead of ten passes rounded to the
/// parameter dtype after each. Options, parameter state, save() and load() are AdamW's, so
/// checkpoints move between the two. Step counts also live on the device (advanced there, and the
/// fused kernel computes the bias corrections from them): no host synchronisation. amsgrad is
/// refused.
class FusedAdamW : public torch::optim::AdamW {
 public:
  FusedAdamW(std::vector<torch::Tensor> params, torch::optim::AdamWOptions options);
  torch::Tensor step(LossClosure closure = nullptr) override;
  /// After a CUDA graph captured one step() and was replayed `replays` times: the capture
  /// counted one step on the host that only the first replay ran, and the later replays advanced
  /// the device's counts unseen; this brings the host's counts (what save() writes) to match.
  void graph_replayed(int64_t replays);

 private:
  struct DeviceStep {
    torch::Tensor count;  ///< fp32 scalar on the parameter's device
    int64_t value;        ///< what `count` holds, known without reading it back
  };
  std::unordered_map<const void*, DeviceStep> device_steps_;
};

/// The optimizer `kind` over `params` (AdamW's learning rate and decoupled weight decay).
std::unique_ptr<torch::optim::AdamW> make_optimizer(OptimizerKind kind,
                                                    std::vector<torch::Tensor> params, double lr,
                                                    double weight_decay);

}  // namespace train_mlp

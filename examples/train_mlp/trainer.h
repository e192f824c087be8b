#pragma once
// Training one variant: AdamW steps, evaluation, checkpoints, progress.

#include <fp8nn/linear_functional.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data.h"
#include "model.h"
#include "optimizer.h"

namespace train_mlp {

enum class Progress { Bar, Lines, Quiet };

struct TrainConfig {
  int64_t steps = 300, batch = 256, eval_every = 100, log_every = 50;
  double lr = 1e-3, weight_decay = 0.01;
  OptimizerKind optimizer = OptimizerKind::AdamW;
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;  ///< parameter and activation dtype
  std::string save, resume;                 ///< checkpoint files ("" = none)
  Progress progress = Progress::Lines;
  /// CUDA only, one process, FusedAdamW: after the warm-up steps one training step (batch
  /// gather, forward, backward, optimizer step) is captured in a CUDA graph and replayed for the
  /// remaining steps, which takes the host's launch work out of the step.
  bool cuda_graph = false;
  /// Data parallelism (null: one process). Each rank trains on rows rank, rank + world_size, ...
  /// of every batch of `batch` rows (so N ranks compute what one process does with the whole
  /// batch), gradients are averaged over the group, and only rank 0 reports, evaluates and saves.
  fp8nn::ProcessGroupRef group;
  /// With `group`: the FP8 layers all-reduce their per-tensor amaxes, so all ranks share scales.
  bool sync_amax = false;
  /// With `group`: gradients are all-reduced in buckets of about this many bytes, each launched
  /// as soon as backward has produced its gradients (torch DDP's default: 25 MiB).
  int64_t bucket_bytes = int64_t{25} << 20;
  /// Called on every rank after each optimizer step (tests check the replicas with it).
  std::function<void(int64_t step, torch::nn::Sequential& model)> after_step;
};

struct EvalPoint {
  int64_t step;
  double loss, accuracy;
};

struct RunResult {
  std::string name;
  std::vector<double> train_loss;  ///< one per step, from step 1
  std::vector<EvalPoint> evals;
  /// Timed over the steps after the warm-up, evaluations left out. peak: -1 on the CPU.
  double samples_per_s = 0, ms_per_step = 0, peak_mib = 0;
};

/// Trains `model` (already converted to its variant) on `data` for config.steps steps in total,
/// starting from config.resume's checkpoint when given; saves to config.save at the end.
/// Batches are drawn with replacement from a generator seeded by (seed, step), so a run resumed
/// at step s sees the same batches as an uninterrupted one. With config.group, every rank of the
/// group calls this with the same arguments; the returned curve is the mean over the ranks (the
/// whole batch's loss) and `evals` is filled on rank 0 only.
RunResult train(torch::nn::Sequential model, const std::string& name, const Dataset& data,
                const TrainConfig& config);

}  // namespace train_mlp

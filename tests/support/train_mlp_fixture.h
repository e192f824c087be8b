#pragma once
// The small examples/train_mlp task the trainer tests share: 32 features, 4 classes, 4096 training
// and 512 test rows; an MLP 32 -> 64 x 3 -> 4; a quiet full run of a given number of steps.

#include <cstdint>

#include "data.h"
#include "model.h"
#include "trainer.h"

namespace fp8nn::test {

inline const train_mlp::Dataset& small_task() {
  static const train_mlp::Dataset data = train_mlp::make_synthetic(32, 4, 4096, 512, 7);
  return data;
}

/// Batch 128, lr 3e-3, seed 11; one evaluation and one log line, at the end.
inline train_mlp::TrainConfig small_config(int64_t steps) {
  train_mlp::TrainConfig config;
  config.steps = steps;
  config.batch = 128;
  config.lr = 3e-3;
  config.eval_every = steps;
  config.log_every = steps;
  config.progress = train_mlp::Progress::Quiet;
  config.seed = 11;
  return config;
}

/// The MLP, initialised from `init_seed`.
inline torch::nn::Sequential small_mlp(uint64_t init_seed) {
  torch::manual_seed(init_seed);
  train_mlp::MlpShape shape;
  shape.features = 32;
  shape.width = 64;
  shape.depth = 3;
  shape.classes = 4;
  return train_mlp::make_mlp(shape);
}

}  // namespace fp8nn::test

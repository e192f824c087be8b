#pragma once
// Drawing fixed-seed random cases (issue #8): case i always draws the same case, whatever the
// platform (std::mt19937_64 and uniform_int_distribution over int64_t); FP8NN_TEST_REDUCED runs
// the first few only.

#include "test_support.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace fp8nn::test {

constexpr int kReducedRandomCases = 16;

/// `full` cases, or the first kReducedRandomCases under reduced_test_set().
inline int random_case_count(int full) {
  return reduced_test_set() ? std::min(full, kReducedRandomCases) : full;
}

/// Uniform integer in [low, high].
inline int64_t pick(std::mt19937_64& rng, int64_t low, int64_t high) {
  return std::uniform_int_distribution<int64_t>(low, high)(rng);
}

template <typename T>
T pick_of(std::mt19937_64& rng, const std::vector<T>& choices) {
  return choices[static_cast<size_t>(pick(rng, 0, static_cast<int64_t>(choices.size()) - 1))];
}

/// Activation-like values with a spread of magnitudes (e^-3 .. e^3 times a normal sample).
inline torch::Tensor spread_randn(at::IntArrayRef shape) {
  return torch::randn(shape) * torch::exp(torch::randn(shape).clamp(-3, 3));
}

/// A size: mostly small and odd, sometimes a multiple of 16, sometimes up to `max_large`.
inline int64_t draw_size(std::mt19937_64& rng, int64_t max_large) {
  switch (pick(rng, 0, 5)) {
    case 0:
      return 16 * pick(rng, 1, 8);
    case 1:
      return pick(rng, 1, max_large);
    default:
      return pick(rng, 1, 48);
  }
}

}  // namespace fp8nn::test

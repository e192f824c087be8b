#pragma once
// Delayed scaling in the cast kernels (Recipe::delayed, docs/design.md): the arguments that make
// a per-tensor cast take its scale from a layer's state and record its amax into that state in
// the same launch. Plain C++: the host fills it, the kernels take it by value.

#include <cstdint>

namespace fp8nn::kernels {

/// Default-constructed: a current-scaling cast (scale from *amax), nothing recorded.
struct DelayedScalingArgs {
  /// Cast with *scale; null: with the scale of *amax (current scaling: a layer's first call).
  const float* scale = nullptr;
  /// The state the cast records into (null: it records nothing). After every block has cast,
  /// the last block to finish takes this call's amax A. A finite A goes into
  /// history[counts[0] % history_len], counts[0] (amaxes recorded) grows by 1, and
  /// *next_scale = scaled_max / W, W = the max of the recorded window (or A when most_recent),
  /// when W > 0 (FLT_MAX where the division overflows; W = 0 keeps the scale). A NaN or Inf A adds
  /// 1 to counts[2] and changes nothing else. Every block adds the elements it saturated
  /// (|v * scale| >= saturation_bound, Inf included) to counts[1].
  float* history = nullptr;
  int64_t history_len = 0;
  float* next_scale = nullptr;
  /// int64 [3]: amaxes recorded, values saturated, non-finite amaxes (not recorded).
  long long* counts = nullptr;
  /// uint32 [2]: the call's amax bits and the blocks done; zero between calls (each call's last
  /// block zeroes them again, so no memset runs per call and a graph replay needs none).
  unsigned* scratch = nullptr;
  /// fmt_max * 2^-margin.
  float scaled_max = 0.0f;
  bool most_recent = false;

  bool records() const { return history != nullptr; }
};

}  // namespace fp8nn::kernels

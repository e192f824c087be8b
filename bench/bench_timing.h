#pragma once
// Timing of libtorch-level work (GEMMs, layer steps) for the benchmarks: one pair of CUDA events
// per run on the current stream, all runs queued before one synchronisation, median reported.

#include <ATen/cuda/CUDAEvent.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace fp8nn::bench {

// Median milliseconds of `iters` runs of run(i), each timed by its own pair of CUDA events.
inline double median_ms(const std::function<void(int)>& run, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) run(i);
  std::vector<at::cuda::CUDAEvent> starts;
  std::vector<at::cuda::CUDAEvent> stops;
  starts.reserve(iters);
  stops.reserve(iters);
  for (int i = 0; i < iters; ++i) {
    starts.emplace_back(cudaEventDefault);
    stops.emplace_back(cudaEventDefault);
  }
  for (int i = 0; i < iters; ++i) {
    starts[i].record();
    run(warmup + i);
    stops[i].record();
  }
  stops.back().synchronize();
  std::vector<double> ms(iters);
  for (int i = 0; i < iters; ++i) ms[i] = starts[i].elapsed_time(stops[i]);
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[iters / 2];
}

// Interleaved timing of variants that compete: run i of every variant is timed back to back
// (in turn order, reversed on odd runs, so no variant always follows the same one), so that
// clock and temperature drift over the runs reach all of them alike.
struct InterleavedTimes {
  std::vector<double> median_ms;  // per variant
  // Per variant: the median over runs of (variant 0's ms / this variant's ms) in the same run.
  std::vector<double> paired_speedup;
};

inline InterleavedTimes interleaved_median_ms(const std::vector<std::function<void(int)>>& runs,
                                              int warmup, int iters) {
  const size_t n = runs.size();
  for (int i = 0; i < warmup; ++i) {
    for (const auto& run : runs) run(i);
  }
  std::vector<at::cuda::CUDAEvent> events;
  events.reserve(2 * n * static_cast<size_t>(iters));
  for (size_t e = 0; e < 2 * n * static_cast<size_t>(iters); ++e)
    events.emplace_back(cudaEventDefault);
  const auto event = [&](int i, size_t v, int which) -> at::cuda::CUDAEvent& {
    return events[(static_cast<size_t>(i) * n + v) * 2 + static_cast<size_t>(which)];
  };
  for (int i = 0; i < iters; ++i) {
    for (size_t turn = 0; turn < n; ++turn) {
      const size_t v = i % 2 == 0 ? turn : n - 1 - turn;
      event(i, v, 0).record();
      runs[v](warmup + i);
      event(i, v, 1).record();
    }
  }
  for (auto& e : events) e.synchronize();
  const auto median = [](std::vector<double> values) {
    std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
    return values[values.size() / 2];
  };
  InterleavedTimes times;
  for (size_t v = 0; v < n; ++v) {
    std::vector<double> ms(iters), ratio(iters);
    for (int i = 0; i < iters; ++i) {
      ms[i] = event(i, v, 0).elapsed_time(event(i, v, 1));
      ratio[i] = event(i, 0, 0).elapsed_time(event(i, 0, 1)) / ms[i];
    }
    times.median_ms.push_back(median(ms));
    times.paired_speedup.push_back(median(ratio));
  }
  return times;
}

}  // namespace fp8nn::bench

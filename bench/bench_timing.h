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

}  // namespace fp8nn::bench

#pragma once
// What every benchmark subcommand shares: its options, CUDA-event timing (median over samples),
// and buffers rotated so that each run reads from DRAM, not from L2.

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fp8nn::bench {

struct Options {
  int warmup = 5;    // untimed samples first
  int samples = 30;  // timed samples; the median is reported
  int batch = 10;    // launches per sample (one event pair around them)
  bool samples_given = false;                // --samples on the command line (else per-bench minimum)
  std::vector<std::array<int64_t, 3>> shapes;  // --shape: gemm/layer shapes (empty: the defaults)
};

/// Median time of one call of `run(i)` in microseconds, i counting up from 0 across all calls
/// (use it to rotate buffers). Everything is enqueued on `stream`.
double median_us(const Options& options, cudaStream_t stream, const std::function<void(int)>& run);

/// Device buffers of `bytes` each, enough of them that together they exceed 2x the L2 size
/// (at least `minimum`): rotating through them keeps every run's data out of L2.
class RotatingBuffers {
 public:
  RotatingBuffers(int64_t bytes, int minimum = 2);
  ~RotatingBuffers();
  RotatingBuffers(const RotatingBuffers&) = delete;
  RotatingBuffers& operator=(const RotatingBuffers&) = delete;
  void* operator[](int i) const { return buffers_[static_cast<size_t>(i) % buffers_.size()]; }
  int count() const { return static_cast<int>(buffers_.size()); }

 private:
  std::vector<void*> buffers_;
};

/// "NVIDIA H100 80GB HBM3, 132 SMs, 50 MB L2" for the current device.
std::string device_description();

/// L2 size of the current device in bytes.
int64_t l2_bytes();

/// One subcommand: runs its benchmarks and prints its table.
void run_quantize(const Options& options);

}  // namespace fp8nn::bench

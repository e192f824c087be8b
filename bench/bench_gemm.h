#pragma once
// The bare-GEMM benchmark (bench_gemm.cpp): fp8nn::functional::scaled_mm against libtorch's own
// FP8 and bf16 products. The bench binary's main calls one of the two entry points.

#include <array>
#include <cstdint>
#include <vector>

namespace fp8nn::bench {

struct GemmBenchOptions {
  int warmup = 10;  ///< untimed runs per method and shape
  int iters = 100;  ///< timed runs per method and shape (at least 50); the median is reported
  /// (M, K, N) triples; empty: the default shapes of bench_gemm.cpp.
  std::vector<std::array<int64_t, 3>> shapes;
};

/// Runs the benchmark and prints a Markdown table (lines starting with "|", notes with "#").
/// Returns 0, also when there is no CUDA device (it says so and skips), 2 on bad options.
int run_gemm_bench(const GemmBenchOptions& options);

/// The same from a command line: --iters N, --warmup N, --shapes M,K,N[:M,K,N...] (argv[0] is
/// skipped, as a subcommand's own name would be).
int run_gemm_bench(int argc, char** argv);

}  // namespace fp8nn::bench

#pragma once
// The bare-GEMM benchmark (bench_gemm.cpp): fp8nn::functional::scaled_mm against libtorch's own
// FP8 and bf16 products. The bench binary's main calls it.

/// Options: --iters N (timed runs per method, at least 50; default 100), --warmup N (default 10),
/// --shapes M,K,N[:M,K,N...] (default: the shapes of issue 5). Prints a Markdown table (lines
/// starting with "|"). Returns 0, also when there is no CUDA device (it says so and skips), 2 on a
/// bad option.
int run_gemm_bench(int argc, char** argv);

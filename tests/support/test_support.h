#pragma once
// Helpers shared by the tests: fresh random inputs, GPU skips that ctest reports as skipped,
// bitwise comparison of FP8 tensors.

#include "catch.h"

#include <torch/torch.h>

// c10/util/Logging.h (inside torch/torch.h) redefines CHECK as a glog-style check that aborts
// the process on failure, losing Catch2's report (expression, values, CAPTURE) and every later
// check of the test. The tests mean Catch2's CHECK: restore it. Logging.h is include-guarded, so
// torch headers included after this one do not redefine it again.
#undef CHECK
#define CHECK(...) \
  INTERNAL_CATCH_TEST("CHECK", Catch::ResultDisposition::ContinueOnFailure, __VA_ARGS__)

#include <cstdint>
#include <string>

namespace fp8nn::test {

/// A seed that differs between runs (printed, so a failure can be replayed with FP8NN_SEED=...).
uint64_t fresh_seed();

/// Seeds libtorch's generators with fresh_seed() and records it in the Catch2 output.
void seed_torch();

/// True when a CUDA device is usable. Without one, GPU tests call FP8NN_SKIP_WITHOUT_CUDA().
bool cuda_available();

/// Prints the marker ctest turns into "skipped" (SKIP_REGULAR_EXPRESSION) and the reason.
void report_skip(const std::string& reason);

/// True when FP8NN_TEST_REDUCED is set (to anything but 0): long tests run a reduced case set,
/// e.g. under compute-sanitizer (scripts/gpu-check --sanitize).
bool reduced_test_set();

/// Under reduced_test_set(): true for a case of more than `limit` elements (or multiply-adds),
/// which the loops over shapes then skip. The edge and ragged shapes, which exercise the bounds
/// that compute-sanitizer checks, are small and stay; large ones only add time under it.
bool skipped_when_reduced(int64_t size, int64_t limit);

/// Number of elements whose bit patterns differ (same shape and dtype required).
int64_t count_bit_differences(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace fp8nn::test

#if FP8NN_CATCH2_MAJOR >= 3
#define FP8NN_SKIP_TEST(reason)         \
  do {                                  \
    ::fp8nn::test::report_skip(reason); \
    SKIP(reason);                       \
  } while (0)
#else
#define FP8NN_SKIP_TEST(reason)         \
  do {                                  \
    ::fp8nn::test::report_skip(reason); \
    return;                             \
  } while (0)
#endif

// GPU tests start with this: without a CUDA device the test is skipped, and says so.
#define FP8NN_SKIP_WITHOUT_CUDA()                                                      \
  do {                                                                                 \
    if (!::fp8nn::test::cuda_available()) FP8NN_SKIP_TEST("no CUDA device available"); \
  } while (0)

// Declares the test case `title` twice, `title, on the CPU` and `title, on CUDA` (skipped without
// a GPU, so a skip stays visible and never hides the CPU's pass); each calls `body` (a function or
// lambda taking a torch::Device) with its device. The CUDA case's name holds "CUDA", which
// scripts/gpu-check filters on.
#define FP8NN_CPU_AND_CUDA_CASE(title, ...)                                      \
  TEST_CASE(title ", on the CPU") { (__VA_ARGS__)(torch::Device(torch::kCPU)); } \
  TEST_CASE(title ", on CUDA") {                                                 \
    FP8NN_SKIP_WITHOUT_CUDA();                                                   \
    (__VA_ARGS__)(torch::Device(torch::kCUDA, 0));                               \
  }

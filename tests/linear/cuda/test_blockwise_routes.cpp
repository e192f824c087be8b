// Recipe::blockwise() layers on CUDA under every FP8NN_GROUP_GEMM route: each route's products
// (cuBLASLt's block modes, group_gemm_sm90, group_gemm_mma, the on-device reference) give the
// forward and all three gradients of the emulation (tests/support/oracle.h) within the
// accumulation bounds, with exact and with power-of-two scales; and each route's three products
// take the paths it names.

#include <fp8nn/fp8nn.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/core/AutogradState.h>

#include "gemm/cuda/group_gemm_cuda.h"
#include "gemm/cuda/scaled_mm_cuda.h"
#include "kernels/gemm/group_gemm.h"
#include "oracle.h"
#include "test_support.h"
#include "tolerance.h"

#include <array>
#include <string>
#include <vector>

namespace {

namespace F = fp8nn::functional;
using fp8nn::LinearFP8Options;
using fp8nn::Recipe;
using Path = F::ScaledMmPath;

std::array<int64_t, F::kScaledMmPathCount> path_counts() {
  std::array<int64_t, F::kScaledMmPathCount> counts{};
  for (int p = 0; p < F::kScaledMmPathCount; ++p) counts[p] = F::scaled_mm_path_count(Path(p));
  return counts;
}

// The path counters are per thread, and the autograd engine runs a CUDA backward on its device's
// worker thread; with multithreading off (for this scope) it runs on the calling thread, which
// then counts the backward products too.
class BackwardOnThisThread {
 public:
  BackwardOnThisThread()
      : previous_(c10::AutogradState::get_tls_state().get_multithreading_enabled()) {
    c10::AutogradState::get_tls_state().set_multithreading_enabled(false);
  }
  ~BackwardOnThisThread() {
    c10::AutogradState::get_tls_state().set_multithreading_enabled(previous_);
  }
  BackwardOnThisThread(const BackwardOnThisThread&) = delete;
  BackwardOnThisThread& operator=(const BackwardOnThisThread&) = delete;

 private:
  bool previous_;
};

bool sm90_device() {
  const cudaDeviceProp* properties = at::cuda::getCurrentDeviceProperties();
  return properties->major == 9 && properties->minor == 0;
}

// The paths of one training step's three products (y = x W^T and dx = dy W: 1x128 x 128x128;
// dW = dy^T x: 1x128 x 1x128) under `route`, on an sm_90 device or not, with the sm90 kernel
// loaded or not (scaled_mm_cuda.cpp's order).
std::vector<Path> expected_paths(const std::string& route, bool sm90, bool sm90_kernel) {
  if (route == "cublaslt" && sm90) {
    return {Path::CublasLtBlock, Path::CublasLtBlock, Path::CublasLtBlock};
  }
  if (route == "sm90" && sm90_kernel) {
    return {Path::GroupGemmSm90, Path::GroupGemmSm90, Path::GroupGemmSm90};
  }
  if (route == "auto" && sm90) {
    return {Path::CublasLtBlock, Path::CublasLtBlock, Path::CublasLtBlock};
  }
  if (route == "mma") return {Path::GroupGemmMma, Path::GroupGemmMma, Path::GroupGemmMma};
  // sm90 and auto without the kernel: group_gemm_mma for the block-scaled products, the K split
  // for the weight gradient.
  if (route == "sm90" || route == "auto") {
    return {Path::GroupGemmMma, Path::GroupGemmMma, Path::CublasLtKSplit};
  }
  // cublaslt off Hopper: the reference for the block-scaled products, the K split for the
  // weight gradient.
  return {Path::Reference, Path::Reference, Path::CublasLtKSplit};
}

}  // namespace

TEST_CASE("Recipe::blockwise() layers match the emulation under every FP8NN_GROUP_GEMM route") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const cudaDeviceProp* properties = at::cuda::getCurrentDeviceProperties();
  if (properties->major * 10 + properties->minor < 89) {
    FP8NN_SKIP_TEST("needs FP8 tensor cores (compute capability 8.9+)");
  }
  bool sm90_kernel = false;
  REQUIRE(fp8nn::kernels::group_gemm_sm90_compiled(&sm90_kernel) == cudaSuccess);
  sm90_kernel = sm90_kernel && sm90_device();
  const torch::Device device(torch::kCUDA);
  // Tokens not a multiple of 128 (the weight gradient's K has a short last block), and every
  // dimension a multiple of 16 (group_gemm_sm90's N and K).
  const int64_t rows = 320, in = 384, out = 256;
  for (const bool power_of_two : {false, true}) {
    for (const char* route : {"cublaslt", "sm90", "mma", "auto"}) {
      CAPTURE(power_of_two, route);
      const fp8nn::cuda::ScopedGroupGemmRoute scoped(route);
      fp8nn::test::seed_torch();
      const auto recipe = Recipe::blockwise(power_of_two);
      fp8nn::LinearFP8 layer(LinearFP8Options(in, out).recipe(recipe));
      layer->to(device);
      const auto x = torch::randn({rows, in}, device).requires_grad_(true);
      const auto dy = torch::randn({rows, out}, device);

      const BackwardOnThisThread same_thread;
      const auto before = path_counts();
      const auto y = layer->forward(x);
      y.backward(dy);
      torch::cuda::synchronize();
      const auto after = path_counts();
      std::vector<int64_t> added(F::kScaledMmPathCount);
      for (int p = 0; p < F::kScaledMmPathCount; ++p) added[p] = after[p] - before[p];
      std::vector<int64_t> expected_added(F::kScaledMmPathCount, 0);
      for (Path p : expected_paths(route, sm90_device(), sm90_kernel)) {
        ++expected_added[static_cast<int>(p)];
      }
      CHECK(added == expected_added);

      const auto ref = fp8nn::test::emulate(recipe, x.detach(), layer->weight, layer->bias, dy);
      using fp8nn::test::accumulation_relative;
      using fp8nn::test::tolerance_ratio;
      CHECK(tolerance_ratio(y, ref.y, torch::kFloat, accumulation_relative(device, in, false)) <=
            1.0);
      CHECK(tolerance_ratio(x.grad(), ref.dx, torch::kFloat,
                            accumulation_relative(device, out, false)) <= 1.0);
      CHECK(tolerance_ratio(layer->weight.grad(), ref.dw, torch::kFloat,
                            accumulation_relative(device, rows, false)) <= 1.0);
      CHECK(tolerance_ratio(layer->bias.grad(), ref.db, torch::kFloat) <= 1.0);
    }
  }
}

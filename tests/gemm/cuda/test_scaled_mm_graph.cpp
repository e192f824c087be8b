// functional::scaled_mm on CUDA makes no host synchronisation and allocates only through the
// caching allocator: it can be captured in a CUDA graph (global capture mode, which rejects any
// unsafe call), and a replay recomputes from the operands' current contents, scales included.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>
#include <vector>

using fp8nn::Format;
using fp8nn::QuantizedTensor;
using fp8nn::test::count_bit_differences;
namespace F = fp8nn::functional;

namespace {

struct Case {
  int64_t M, K, N;
  int64_t group_a;  // 0: per tensor
  const char* what;
};

QuantizedTensor quantize_cuda(const torch::Tensor& x, Format format, int64_t group_size) {
  const auto q =
      group_size == 0 ? F::quantize(x, format) : F::quantize_per_group(x, format, group_size);
  return {q.data.cuda(), q.scale_inv.cuda(), q.format, q.group_size};
}

}  // namespace

TEST_CASE("CUDA scaled_mm is captured in a CUDA graph and a replay uses the current operands") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const std::vector<Case> cases = {
      {64, 128, 32, 0, "aligned: cuBLASLt directly"},
      {17, 33, 15, 0, "unaligned: cuBLASLt on padded copies"},
      {64, 128, 32, 4096, "per-row a: OUTER_VEC scales"},
      {32, 256, 48, 128, "groups of 128: the on-device reference"},
  };
  for (const auto& c : cases) {
    for (bool fast : {false, true}) {
      CAPTURE(c.what, fast);
      auto a = quantize_cuda(torch::randn({c.M, c.K}), Format::E4M3, c.group_a);
      const auto b = quantize_cuda(torch::randn({c.N, c.K}), Format::E4M3, 0);
      const auto bias = torch::randn({c.N}).to(torch::kBFloat16).cuda();

      // Warm-up outside the capture: handle creation and the heuristic query happen here.
      F::scaled_mm(a, b, bias, torch::kBFloat16, fast);
      torch::cuda::synchronize();

      at::cuda::CUDAGraph graph;
      torch::Tensor captured;
      {
        const c10::cuda::CUDAStreamGuard guard(at::cuda::getStreamFromPool());
        graph.capture_begin();
        captured = F::scaled_mm(a, b, bias, torch::kBFloat16, fast);
        graph.capture_end();
      }

      // New contents for a (data and scale, in place), a poisoned output, then a replay.
      const auto fresh = quantize_cuda(torch::randn({c.M, c.K}) * 3.0, Format::E4M3, c.group_a);
      a.data.copy_(fresh.data);
      a.scale_inv.copy_(fresh.scale_inv);
      captured.fill_(std::numeric_limits<float>::quiet_NaN());
      graph.replay();
      torch::cuda::synchronize();

      const auto eager = F::scaled_mm(fresh, b, bias, torch::kBFloat16, fast);
      CHECK(torch::isfinite(captured).all().item<bool>());
      CHECK(count_bit_differences(captured, eager) == 0);
    }
  }
}

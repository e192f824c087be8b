// The CUDA host code's device memory (src/common/cuda/device_memory.h): buffers carved from one
// block, the per-stream workspace, and what a warm call allocates through the public API (counted
// by the caching allocator). Every test needs a GPU.

#include <fp8nn/fp8nn.h>

#include "common/cuda/device_memory.h"
#include "test_support.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <vector>

using fp8nn::Format;
namespace F = fp8nn::functional;
namespace C = fp8nn::cuda;

namespace {

const c10::Device kCuda(c10::kCUDA, 0);

// Blocks the caching allocator has handed out on device 0 so far.
int64_t allocations() {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocation[0].allocated;
}

// Allocations made by one call of `work`, after three warm-up calls.
template <typename Work>
int64_t allocations_of(Work&& work) {
  for (int i = 0; i < 3; ++i) work();
  torch::cuda::synchronize();
  const int64_t before = allocations();
  work();
  const int64_t made = allocations() - before;
  torch::cuda::synchronize();
  return made;
}

uintptr_t address(const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

}  // namespace

TEST_CASE("CUDA carve: tensors at aligned offsets of one block, sharing its storage") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const c10::cuda::CUDAGuard guard(kCuda);
  const auto block = C::empty_bytes(1024, kCuda);
  block.fill_(0);
  auto floats = C::carve(block, 256, {2, 3}, torch::kFloat);
  CHECK(address(floats) == address(block) + 256);
  CHECK(floats.sizes() == torch::IntArrayRef({2, 3}));
  CHECK(floats.is_contiguous());
  CHECK(floats.device() == kCuda);
  floats.fill_(2.5f);
  // The bytes land in the block: 6 floats of 2.5 at 256..279, zeros elsewhere.
  const auto bytes = block.cpu();
  CHECK(bytes.narrow(0, 256, 24).view(torch::kFloat).eq(2.5f).all().item<bool>());
  CHECK(bytes.narrow(0, 0, 256).eq(0).all().item<bool>());
  CHECK(bytes.narrow(0, 280, 1024 - 280).eq(0).all().item<bool>());
  auto fp8 = C::carve(block, 512, {4, 128}, torch::kFloat8_e4m3fn);
  CHECK(fp8.scalar_type() == torch::kFloat8_e4m3fn);
  CHECK(address(fp8) == address(block) + 512);
  // Off the boundary, or past the block's end: refused.
  CHECK_THROWS_AS(C::carve(block, 100, {2}, torch::kFloat), c10::Error);
  CHECK_THROWS_AS(C::carve(block, 768, {512}, torch::kByte), c10::Error);
}

TEST_CASE("CUDA stream workspace: one block per stream, reused and grown; new inside a capture") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const c10::cuda::CUDAGuard guard(kCuda);
  const c10::cuda::CUDAStreamGuard on_a(c10::cuda::getStreamFromPool());
  const auto first = C::stream_workspace(1000);
  CHECK(first.numel() >= 1000);
  CHECK(address(C::stream_workspace(500)) == address(first));
  const int64_t larger = first.numel() + 3 * (int64_t{1} << 20);
  const auto grown = C::stream_workspace(larger);
  CHECK(grown.numel() >= larger);
  CHECK(address(C::stream_workspace(10)) == address(grown));
  uintptr_t other_stream = 0;
  {
    const c10::cuda::CUDAStreamGuard on_b(c10::cuda::getStreamFromPool());
    other_stream = address(C::stream_workspace(10));
  }
  CHECK(other_stream != address(grown));
  // In a capture (on the current stream): not the eager block.
  auto x = torch::ones({64}, torch::TensorOptions().device(kCuda));
  at::cuda::CUDAGraph graph;
  uintptr_t captured = 0;
  graph.capture_begin();
  captured = address(C::stream_workspace(10));
  x.add_(1);
  graph.capture_end();
  CHECK(captured != address(grown));
  CHECK(address(C::stream_workspace(10)) == address(grown));
}

TEST_CASE("CUDA warm quantize and scaled_mm calls allocate only what they hand back") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const c10::cuda::CUDAGuard guard(kCuda);
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(kCuda);
  const auto x = torch::randn({512, 768}, bf16);
  const auto w = torch::randn({256, 768}, bf16);
  // Per tensor: the data and its scale_inv in one block.
  CHECK(allocations_of([&] { F::quantize(x, Format::E4M3); }) == 1);
  const auto q = F::quantize(x, Format::E4M3);
  CHECK(q.scale_inv.storage().is_alias_of(q.data.storage()));
  // With the transpose: the row-major copy, and the transposed one with the shared scale_inv.
  CHECK(allocations_of([&] { F::quantize_with_transpose(x, Format::E4M3); }) == 2);
  const auto pair = F::quantize_with_transpose(x, Format::E4M3);
  CHECK(pair.transposed.scale_inv.storage().is_alias_of(pair.transposed.data.storage()));
  CHECK_FALSE(pair.quantized.data.storage().is_alias_of(pair.transposed.data.storage()));
  CHECK(allocations_of([&] { F::quantize_per_group(x, Format::E4M3, 128); }) == 1);
  // The product: its output only (cuBLASLt's workspace is the stream's).
  const auto wq = F::quantize(w, Format::E4M3);
  for (const bool fast : {true, false}) {
    CHECK(allocations_of([&] { F::scaled_mm(q, wq, c10::nullopt, torch::kBFloat16, fast); }) == 1);
  }
}

TEST_CASE("CUDA a warm Global layer step allocates the bf16 step's tensors and its FP8 copies") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const c10::cuda::CUDAGuard guard(kCuda);
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(kCuda);
  const auto x = torch::randn({256, 512}, bf16).requires_grad_();
  const auto dy = torch::randn({256, 384}, bf16);
  torch::nn::Linear linear(torch::nn::LinearOptions(512, 384).bias(false));
  linear->to(kCuda, torch::kBFloat16);
  fp8nn::LinearFP8Global global(fp8nn::LinearFP8Options(512, 384).bias(false));
  global->to(kCuda, torch::kBFloat16);
  const auto step = [&](auto& layer) {
    return [&] {
      layer(x).backward(dy);
      layer->weight.mutable_grad() = torch::Tensor();
      x.mutable_grad() = torch::Tensor();
    };
  };
  const int64_t bf16_step = allocations_of(step(linear));
  const int64_t global_step = allocations_of(step(global));
  INFO("allocations per step: bf16 " << bf16_step << ", Global " << global_step);
  // Global's FP8 copies: x and x^T (with its scale), W (with its scale) and W's amax, dy and dy^T,
  // W^T rebuilt in backward. No scratch, no cuBLASLt workspace.
  CHECK(global_step <= bf16_step + 7);
}

TEST_CASE("CUDA quantize on two streams at once gives each stream's own result") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const c10::cuda::CUDAGuard guard(kCuda);
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(kCuda);
  // Different ranges, so that a scale or amax taken from the other stream's scratch would show.
  const auto a = torch::randn({1024, 1024}, bf16);
  const auto b = torch::randn({1024, 1024}, bf16) * 300;
  const auto expected_a = F::quantize_with_transpose(a, Format::E4M3);
  const auto expected_b = F::quantize_with_transpose(b, Format::E4M3);
  const auto stream_a = c10::cuda::getStreamFromPool();
  const auto stream_b = c10::cuda::getStreamFromPool();
  torch::cuda::synchronize();
  std::vector<fp8nn::QuantizedPair> on_a, on_b;
  for (int i = 0; i < 20; ++i) {
    {
      const c10::cuda::CUDAStreamGuard on(stream_a);
      on_a.push_back(F::quantize_with_transpose(a, Format::E4M3));
    }
    {
      const c10::cuda::CUDAStreamGuard on(stream_b);
      on_b.push_back(F::quantize_with_transpose(b, Format::E4M3));
    }
  }
  torch::cuda::synchronize();
  for (int i = 0; i < 20; ++i) {
    CHECK(torch::equal(on_a[i].transposed.data.view(torch::kByte),
                       expected_a.transposed.data.view(torch::kByte)));
    CHECK(torch::equal(on_a[i].quantized.scale_inv, expected_a.quantized.scale_inv));
    CHECK(torch::equal(on_b[i].quantized.data.view(torch::kByte),
                       expected_b.quantized.data.view(torch::kByte)));
    CHECK(torch::equal(on_b[i].quantized.scale_inv, expected_b.quantized.scale_inv));
  }
}

// quantize_with_transpose on the CPU reference path: the per-tensor quantization and its transpose
// sharing one scale_inv (the CUDA path is compared against this in test_quantize_cuda.cpp).

#include <fp8nn/fp8nn.h>

#include "test_support.h"

using fp8nn::Format;
using fp8nn::test::count_bit_differences;
namespace F = fp8nn::functional;

TEST_CASE("quantize_with_transpose equals quantize plus transpose, sharing scale_inv") {
  fp8nn::test::seed_torch();
  for (auto f : {Format::E4M3, Format::E5M2}) {
    for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      for (const auto& shape :
           std::vector<std::vector<int64_t>>{{1, 1}, {3, 1000}, {130, 72}, {0, 5}}) {
        CAPTURE(fp8nn::name_of(f), dtype, shape);
        const auto x = torch::randn(shape).to(dtype);
        const auto pair = F::quantize_with_transpose(x, f);
        const auto q = F::quantize(x, f);
        CHECK(count_bit_differences(pair.quantized.data, q.data) == 0);
        CHECK(count_bit_differences(pair.transposed.data, q.data.t().contiguous()) == 0);
        CHECK(pair.transposed.data.is_contiguous());
        CHECK(pair.quantized.scale_inv.item<float>() == q.scale_inv.item<float>());
        CHECK(pair.transposed.scale_inv.data_ptr() == pair.quantized.scale_inv.data_ptr());
        CHECK(pair.quantized.group_size == 0);
        CHECK(pair.transposed.format == f);
      }
    }
  }
}

TEST_CASE("quantize_with_transpose rejects tensors that are not 2-d") {
  for (const auto& shape : std::vector<std::vector<int64_t>>{{5}, {2, 3, 4}}) {
    CHECK_THROWS_AS(F::quantize_with_transpose(torch::randn(shape), Format::E4M3), c10::ValueError);
  }
  CHECK_THROWS_AS(F::quantize_with_transpose(torch::ones({2, 2}, torch::kInt), Format::E4M3),
                  c10::TypeError);
}

TEST_CASE("quantize with the true amax given equals quantize; amax is checked") {
  fp8nn::test::seed_torch();
  for (auto f : {Format::E4M3, Format::E5M2}) {
    const auto x = torch::randn({37, 300}).to(torch::kBFloat16);
    const auto amax = x.to(torch::kFloat).abs().amax();
    const auto q = F::quantize(x, f);
    const auto given = F::quantize(x, f, amax);
    CHECK(count_bit_differences(given.data, q.data) == 0);
    CHECK(given.scale_inv.item<float>() == q.scale_inv.item<float>());
    const auto pair = F::quantize_with_transpose(x, f, amax.reshape({1}));
    CHECK(count_bit_differences(pair.transposed.data, q.data.t().contiguous()) == 0);
    // A larger amax gives a smaller scale: scale_inv = amax / max.
    const auto halved = F::quantize(x, f, amax * 2);
    CHECK(halved.scale_inv.item<float>() == 1.0f / (fp8nn::max_of(f) / (2 * amax.item<float>())));
  }
  CHECK_THROWS_AS(F::quantize(torch::ones({2}), Format::E4M3, torch::ones({2})), c10::ValueError);
  CHECK_THROWS_AS(F::quantize(torch::ones({2}), Format::E4M3, torch::ones({1}, torch::kDouble)),
                  c10::TypeError);
  CHECK_THROWS_AS(F::quantize_with_transpose(torch::ones({2, 2}), Format::E4M3, torch::Tensor()),
                  c10::ValueError);
}

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

#include "oracle.h"

#include <algorithm>
#include <cfloat>
#include <vector>

namespace fp8nn::test {

namespace {

torch::ScalarType fp8_dtype(Fp8 format) {
  return format == Fp8::E4M3 ? torch::kFloat8_e4m3fn : torch::kFloat8_e5m2;
}

// [rows, cols] for any shape: rows is the product of the leading dims (1 for 0-d and 1-d).
std::pair<int64_t, int64_t> matrix_shape(const torch::Tensor& x) {
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1);
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return {rows, cols};
}

Reference bias_terms(const Reference& y, const torch::Tensor& bias) {
  if (!bias.defined()) return y;
  return {y.value + f64(bias), y.magnitude + f64(bias).abs()};
}

Reference bias_grad(const torch::Tensor& dy) { return {f64(dy).sum(0), f64(dy).abs().sum(0)}; }

}  // namespace

double format_max(Fp8 format) { return format == Fp8::E4M3 ? 448.0 : 57344.0; }

torch::Tensor scale_for(const torch::Tensor& amax, Fp8 format, bool power_of_two) {
  auto scale = torch::full_like(amax, format_max(format)) / amax;  // fp32 division
  scale = torch::where(torch::isposinf(scale), torch::full_like(scale, FLT_MAX), scale);
  scale = torch::where(amax == 0, torch::ones_like(scale), scale);
  if (!power_of_two) return scale;
  // scale = m 2^e with m in [0.5, 1): the largest power of two not above it is 2^(e - 1).
  const auto [mantissa, exponent] = torch::frexp(scale);
  const auto below = torch::ldexp(torch::ones_like(scale), exponent - 1);
  return torch::where(scale.isnan() | (scale == 0), scale, below);
}

float scale_for(float amax, Fp8 format) {
  return scale_for(torch::tensor(amax), format).item<float>();
}

torch::Tensor cast(const torch::Tensor& values, const torch::Tensor& scale, Fp8 format) {
  const double m = format_max(format);
  const auto v = values.to(torch::kFloat);
  return torch::where(v.isinf(), v, (v * scale).clamp(-m, m)).to(fp8_dtype(format));
}

torch::Tensor cast(const torch::Tensor& values, float scale, Fp8 format) {
  return cast(values, torch::tensor(scale), format);
}

Quantized quantize(const torch::Tensor& x, Fp8 format, int64_t group, bool power_of_two) {
  const auto v = x.detach().cpu().to(torch::kFloat).contiguous();
  const auto [rows, cols] = matrix_shape(v);
  const auto matrix = v.reshape({rows, cols});
  Quantized q;
  q.group = group;
  if (group == 0) {
    // (an empty tensor has amax 0: amax() itself refuses empty input)
    const auto amax = v.numel() == 0 ? torch::zeros({}) : v.abs().amax();
    const auto scale = scale_for(amax, format, power_of_two);
    q.data = cast(matrix, scale, format).view(v.sizes());
    q.scale_inv = torch::ones_like(scale) / scale;
    return q;
  }
  const int64_t groups = (cols + group - 1) / group;
  auto data = torch::empty({rows, cols}, fp8_dtype(format));
  q.scale_inv = torch::empty({rows, groups});
  for (int64_t g = 0; g < groups; ++g) {  // one group column at a time, all rows at once
    const int64_t begin = g * group, length = std::min(group, cols - begin);
    const auto block = matrix.narrow(1, begin, length);
    const auto scale = scale_for(block.abs().amax(1, /*keepdim=*/true), format, power_of_two);
    data.narrow(1, begin, length).copy_(cast(block, scale, format));
    q.scale_inv.select(1, g).copy_((torch::ones_like(scale) / scale).squeeze(1));
  }
  q.data = data.view(v.sizes());
  return q;
}

Quantized quantize_blocks(const torch::Tensor& x2d, Fp8 format, int64_t block, bool power_of_two) {
  const auto v = x2d.detach().cpu().to(torch::kFloat).contiguous();
  const int64_t rows = v.size(0), cols = v.size(1);
  const int64_t block_rows = (rows + block - 1) / block, block_cols = (cols + block - 1) / block;
  Quantized q;
  q.group = block;
  q.group_rows = block;
  q.data = torch::empty({rows, cols}, fp8_dtype(format));
  q.scale_inv = torch::empty({block_rows, block_cols});
  for (int64_t br = 0; br < block_rows; ++br) {
    for (int64_t bc = 0; bc < block_cols; ++bc) {
      const int64_t r0 = br * block, c0 = bc * block;
      const auto values =
          v.narrow(0, r0, std::min(block, rows - r0)).narrow(1, c0, std::min(block, cols - c0));
      const auto one = quantize(values, format, /*group=*/0, power_of_two);  // the block alone
      q.data.narrow(0, r0, values.size(0)).narrow(1, c0, values.size(1)).copy_(one.data);
      q.scale_inv[br][bc] = one.scale_inv;
    }
  }
  return q;
}

torch::Tensor dequantize(const torch::Tensor& data, const torch::Tensor& scale_inv, int64_t group,
                         int64_t group_rows) {
  const auto [rows, cols] = matrix_shape(data);
  const auto values = f64(data).reshape({rows, cols});
  if (group == 0) return values * f64(scale_inv);
  return values * f64(scale_inv)
                      .repeat_interleave(group_rows, /*dim=*/0)
                      .narrow(0, 0, rows)
                      .repeat_interleave(group, /*dim=*/1)
                      .narrow(1, 0, cols);
}

torch::Tensor dequantize(const Quantized& q) {
  return dequantize(q.data, q.scale_inv, q.group, q.group_rows);
}

torch::Tensor dequantize(const fp8nn::QuantizedTensor& q) {
  return dequantize(q.data, q.scale_inv, q.group_size, q.group_rows);
}

torch::Tensor fake_quantize(const torch::Tensor& x2d, Fp8 format, int64_t group,
                            bool power_of_two) {
  return dequantize(quantize(x2d, format, group, power_of_two));
}

torch::Tensor f64(const torch::Tensor& t) { return t.detach().cpu().to(torch::kDouble); }

Reference product(const torch::Tensor& a, const torch::Tensor& b) {
  return {at::matmul(a, b.t()), at::matmul(a.abs(), b.abs().t())};
}

LinearReference emulate(const fp8nn::Recipe& recipe, const torch::Tensor& x,
                        const torch::Tensor& weight, const torch::Tensor& bias,
                        const torch::Tensor& dy) {
  const auto group_of = [](const fp8nn::OperandRecipe& operand, int64_t row) {
    return operand.scaling == fp8nn::Scaling::PerTensor ? 0
           : operand.group_size > 0                     ? operand.group_size
                                                        : fp8nn::default_group_size(row);
  };
  const auto fake = [&](const torch::Tensor& t, const fp8nn::OperandRecipe& operand, int64_t row) {
    if (operand.scaling == fp8nn::Scaling::Block128x128) {
      return dequantize(quantize_blocks(t, operand.format, 128, operand.power_of_two_scales));
    }
    return fake_quantize(t, operand.format, group_of(operand, row), operand.power_of_two_scales);
  };
  // The weight gradient's copies of x and dy: t^T quantized with the operand's groups along the
  // rows of t (per tensor, the transpose of the forward copy).
  const auto fake_t = [&](const torch::Tensor& t, const fp8nn::OperandRecipe& operand,
                          int64_t row) {
    return fake_quantize(t.t().contiguous(), operand.format, group_of(operand, row),
                         operand.power_of_two_scales);
  };
  const int64_t in = weight.size(1), out = weight.size(0);
  const auto xq = fake(x, recipe.x, in), wq = fake(weight, recipe.weight, in);
  const auto dyq = fake(dy, recipe.grad_output, out);
  const bool fp8_dx = recipe.grad_input.precision == fp8nn::Precision::FP8;
  const bool fp8_dw = recipe.grad_weight.precision == fp8nn::Precision::FP8;
  return {bias_terms(product(xq, wq), bias),
          fp8_dx ? product(dyq, wq.t()) : product(f64(dy), f64(weight).t()),
          fp8_dw ? product(fake_t(dy, recipe.grad_output, out), fake_t(x, recipe.x, in))
                 : product(f64(dy).t(), f64(x).t()),
          bias_grad(dy)};
}

LinearReference emulate_global(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& dy) {
  return emulate(fp8nn::Recipe::global(), x, weight, bias, dy);
}

LinearReference emulate_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                              const torch::Tensor& bias, const torch::Tensor& dy, int64_t G_in,
                              int64_t G_out) {
  return emulate(fp8nn::Recipe::mixed(G_in, G_out), x, weight, bias, dy);
}

}  // namespace fp8nn::test

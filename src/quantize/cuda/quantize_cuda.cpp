#include "quantize/cuda/quantize_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/error.h"
#include "common/format.h"
#include "kernels/quantize/amax.h"
#include "kernels/quantize/cast.h"
#include "kernels/quantize/cast_transpose.h"
#include "kernels/quantize/dequantize.h"
#include "kernels/quantize/quantize_per_group.h"

namespace fp8nn::cuda {
namespace {

uint8_t* bytes_of(const torch::Tensor& t) { return static_cast<uint8_t*>(t.data_ptr()); }

// rows x cols of the per-group view: cols = last dim, rows = the product of the others.
std::pair<int64_t, int64_t> rows_cols_of(const torch::Tensor& t) {
  const int64_t cols = t.dim() == 0 ? 1 : t.size(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}

// The kernels' view of the monitor's counts: null when there are none.
unsigned long long* counters_of(const torch::Tensor& counts) {
  return counts.defined() ? reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>())
                          : nullptr;
}

// Scratch for the one-launch amax + cast kernels (kernels/quantize/cast.h), any content.
torch::Tensor amax_cast_scratch(const torch::Tensor& input) {
  int64_t words = 0;
  FP8NN_CUDA_CHECK(kernels::amax_cast_scratch_words(&words));
  return at::empty({words}, input.options().dtype(at::kInt));
}

unsigned* words_of(const torch::Tensor& scratch) {
  return reinterpret_cast<unsigned*>(scratch.data_ptr<int32_t>());
}

QuantizedTensor quantize_per_tensor(const torch::Tensor& x, Format format,
                                    const torch::Tensor& amax_given, const torch::Tensor& counts,
                                    torch::Tensor* amax_out) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto input = x.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  auto scale_inv = at::empty({}, input.options().dtype(at::kFloat));
  auto data = at::empty(input.sizes(), input.options().dtype(dtype_of(format)));
  const auto type = high_precision_of(input.scalar_type(), "quantize");
  if (!amax_given.defined()) {
    const auto scratch = amax_cast_scratch(input);
    float* amax_ptr = nullptr;
    if (amax_out != nullptr) {
      *amax_out = at::empty({}, input.options().dtype(at::kFloat));
      amax_ptr = amax_out->data_ptr<float>();
    }
    FP8NN_CUDA_CHECK(kernels::amax_cast_per_tensor(
        input.data_ptr(), type, input.numel(), kernel_format_of(format), bytes_of(data),
        scale_inv.data_ptr<float>(), words_of(scratch), scratch.numel(), stream,
        counters_of(counts), amax_ptr));
    return {std::move(data), std::move(scale_inv), format, 0};
  }
  const auto amax = amax_given.contiguous();
  FP8NN_CUDA_CHECK(kernels::cast_per_tensor(
      input.data_ptr(), type, input.numel(), kernel_format_of(format), amax.data_ptr<float>(),
      bytes_of(data), scale_inv.data_ptr<float>(), stream, counters_of(counts)));
  return {std::move(data), std::move(scale_inv), format, 0};
}

QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   const torch::Tensor& counts) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto input = x.contiguous();
  const auto [rows, cols] = rows_cols_of(input);
  const int64_t groups = (cols + group_size - 1) / group_size;
  auto scale_inv = at::empty({rows, groups}, input.options().dtype(at::kFloat));
  auto data = at::empty(input.sizes(), input.options().dtype(dtype_of(format)));
  FP8NN_CUDA_CHECK(kernels::quantize_per_group(
      input.data_ptr(), high_precision_of(input.scalar_type(), "quantize_per_group"), rows, cols,
      group_size, kernel_format_of(format), bytes_of(data), scale_inv.data_ptr<float>(),
      at::cuda::getCurrentCUDAStream(), counters_of(counts)));
  return {std::move(data), std::move(scale_inv), format, group_size};
}

}  // namespace

QuantizedTensor quantize(const torch::Tensor& x, Format format, int64_t group_size,
                         const torch::Tensor& amax, const torch::Tensor& counts,
                         torch::Tensor* amax_out) {
  return group_size > 0 ? quantize_per_group(x, format, group_size, counts)
                        : quantize_per_tensor(x, format, amax, counts, amax_out);
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax_given, const torch::Tensor& counts,
                                      torch::Tensor* column_sums) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t rows = input.size(0), cols = input.size(1);
  const auto fp8 = input.options().dtype(dtype_of(format));
  auto scale_inv = at::empty({}, input.options().dtype(at::kFloat));
  auto data = at::empty({rows, cols}, fp8);
  auto data_t = at::empty({cols, rows}, fp8);
  const auto type = high_precision_of(input.scalar_type(), "quantize_with_transpose");
  bool summed = false;
  if (!amax_given.defined()) {
    const auto scratch = amax_cast_scratch(input);
    const auto launch = [&](float* sums, float* partial_sums) {
      return kernels::amax_cast_transpose_per_tensor(
          input.data_ptr(), type, rows, cols, kernel_format_of(format), bytes_of(data),
          bytes_of(data_t), scale_inv.data_ptr<float>(), words_of(scratch), scratch.numel(), stream,
          counters_of(counts), sums, partial_sums);
    };
    if (column_sums != nullptr) {
      const auto f32 = input.options().dtype(at::kFloat);
      auto sums = at::empty({cols}, f32);
      const auto partial = at::empty({kernels::column_sums_partial_rows(rows), cols}, f32);
      const cudaError_t status = launch(sums.data_ptr<float>(), partial.data_ptr<float>());
      if (status != cudaErrorNotSupported) {
        FP8NN_CUDA_CHECK(status);
        *column_sums = std::move(sums);
        summed = true;
      }
    }
    if (!summed) FP8NN_CUDA_CHECK(launch(nullptr, nullptr));
  } else {
    const auto amax = amax_given.contiguous();
    FP8NN_CUDA_CHECK(kernels::cast_transpose_per_tensor(
        input.data_ptr(), type, rows, cols, kernel_format_of(format), amax.data_ptr<float>(),
        bytes_of(data), bytes_of(data_t), scale_inv.data_ptr<float>(), stream,
        counters_of(counts)));
  }
  if (column_sums != nullptr && !summed) {
    *column_sums = input.sum(0, /*keepdim=*/false, at::kFloat);
  }
  return {{std::move(data), scale_inv, format, 0}, {std::move(data_t), scale_inv, format, 0}};
}

QuantizedPair quantize_delayed(const torch::Tensor& x2d, Format format, bool with_transpose,
                               const detail::DelayedTensors& delayed, const torch::Tensor& counts) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto type = high_precision_of(input.scalar_type(), "quantize");
  const auto fp8 = input.options().dtype(dtype_of(format));
  auto scale_inv = at::empty({}, input.options().dtype(at::kFloat));
  auto data = at::empty(input.sizes(), fp8);
  kernels::DelayedScalingArgs args;
  torch::Tensor amax;  // the first call's, for current scaling
  if (delayed.first) {
    amax = at::empty({}, input.options().dtype(at::kFloat));
    FP8NN_CUDA_CHECK(kernels::amax_per_tensor(input.data_ptr(), type, input.numel(),
                                              amax.data_ptr<float>(), stream));
  } else {
    args.scale = delayed.scale.data_ptr<float>();
  }
  args.history = delayed.history.data_ptr<float>();
  args.history_len = delayed.history.numel();
  args.next_scale = delayed.scale.data_ptr<float>();
  args.counts = reinterpret_cast<long long*>(delayed.counts.data_ptr<int64_t>());
  args.scratch = reinterpret_cast<unsigned*>(delayed.scratch.data_ptr<int32_t>());
  args.scaled_max = delayed.scaled_max;
  args.most_recent = delayed.most_recent;
  const float* amax_ptr = amax.defined() ? amax.data_ptr<float>() : nullptr;
  if (!with_transpose) {
    FP8NN_CUDA_CHECK(kernels::cast_per_tensor(
        input.data_ptr(), type, input.numel(), kernel_format_of(format), amax_ptr, bytes_of(data),
        scale_inv.data_ptr<float>(), stream, counters_of(counts), args));
    return {{std::move(data), std::move(scale_inv), format, 0}, {}};
  }
  const int64_t rows = input.size(0), cols = input.size(1);
  auto data_t = at::empty({cols, rows}, fp8);
  FP8NN_CUDA_CHECK(kernels::cast_transpose_per_tensor(
      input.data_ptr(), type, rows, cols, kernel_format_of(format), amax_ptr, bytes_of(data),
      bytes_of(data_t), scale_inv.data_ptr<float>(), stream, counters_of(counts), args));
  return {{std::move(data), scale_inv, format, 0}, {std::move(data_t), scale_inv, format, 0}};
}

QuantizedTensor quantize_transposed(const torch::Tensor& x2d, Format format,
                                    const torch::Tensor& amax_given) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const auto amax = amax_given.contiguous();
  const int64_t rows = input.size(0), cols = input.size(1);
  auto scale_inv = at::empty({}, input.options().dtype(at::kFloat));
  auto data_t = at::empty({cols, rows}, input.options().dtype(dtype_of(format)));
  FP8NN_CUDA_CHECK(kernels::cast_transpose_per_tensor(
      input.data_ptr(), high_precision_of(input.scalar_type(), "quantize_with_transpose"), rows,
      cols, kernel_format_of(format), amax.data_ptr<float>(), /*out=*/nullptr, bytes_of(data_t),
      scale_inv.data_ptr<float>(), at::cuda::getCurrentCUDAStream()));
  return {std::move(data_t), std::move(scale_inv), format, 0};
}

torch::Tensor dequantize(const QuantizedTensor& q, at::ScalarType dtype) {
  TORCH_CHECK(q.scale_inv.device() == q.data.device(), "fp8nn::dequantize: expected scale_inv on ",
              q.data.device(), ", got ", q.scale_inv.device());
  const c10::cuda::CUDAGuard guard(q.data.device());
  const auto data = q.data.contiguous();
  const auto scale_inv = q.scale_inv.contiguous();
  auto out = at::empty(data.sizes(), data.options().dtype(dtype));
  // Per tensor the data is one flat row; per group, the rows x cols view of the groups.
  const auto [rows, cols] =
      q.group_size == 0 ? std::pair<int64_t, int64_t>{1, data.numel()} : rows_cols_of(data);
  FP8NN_CUDA_CHECK(kernels::dequantize(bytes_of(data), kernel_format_of(q.format), rows, cols,
                                       q.group_size, scale_inv.data_ptr<float>(), out.data_ptr(),
                                       high_precision_of(dtype, "dequantize"),
                                       at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace fp8nn::cuda

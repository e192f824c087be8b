#include "quantize/cuda/quantize_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/cuda/device_memory.h"
#include "common/error.h"
#include "common/format.h"
#include "kernels/quantize/amax.h"
#include "kernels/quantize/cast.h"
#include "kernels/quantize/cast_transpose.h"
#include "kernels/quantize/dequantize.h"
#include "kernels/quantize/quantize_per_block.h"
#include "kernels/quantize/quantize_per_group.h"
#include "kernels/quantize/quantize_per_group_transpose.h"

#include <cstdlib>
#include <cstring>
#include <tuple>
#include <utility>

namespace fp8nn::cuda {
namespace {

static_assert(kernels::kScaleBlock == kBlockSize, "the per-block kernel's block is the API's");
static_assert(kernels::kTransposeGroup == kBlockSize, "the two-axis kernel's group is the API's");

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

// How the tile kernels read their 128 x 128 tiles, and the per-group kernel its long groups:
// FP8NN_TILE_LOAD = registers, shared, or twice (quantize_per_block only; the others read into
// registers then); unset or empty, the kernel's default (the fastest way `fp8nn_bench quantize`
// measured for it: docs/design.md). Read at every call so that a benchmark can switch it between
// steps.
kernels::TileLoad tile_load(kernels::TileLoad fallback, bool read_twice_allowed) {
  const char* setting = std::getenv("FP8NN_TILE_LOAD");
  if (setting == nullptr || *setting == '\0') return fallback;
  if (std::strcmp(setting, "registers") == 0) return kernels::TileLoad::kRegisters;
  if (std::strcmp(setting, "twice") == 0) {
    return read_twice_allowed ? kernels::TileLoad::kReadTwice : kernels::TileLoad::kRegisters;
  }
  TORCH_CHECK_VALUE(std::strcmp(setting, "shared") == 0,
                    "fp8nn: expected FP8NN_TILE_LOAD to be registers, shared or twice, got \"",
                    setting, "\"");
  return kernels::TileLoad::kShared;
}

// FP8 data of `sizes` with its scale_inv (`scale_sizes` fp32) after it, in one allocation: the
// two are used, and saved for backward, together.
std::pair<torch::Tensor, torch::Tensor> data_with_scales(at::IntArrayRef sizes, Format format,
                                                         at::IntArrayRef scale_sizes,
                                                         c10::Device device) {
  int64_t numel = 1, scales = 1;
  for (const int64_t size : sizes) numel *= size;
  for (const int64_t size : scale_sizes) scales *= size;
  const int64_t data_bytes = carve_size(numel);
  const auto block = empty_bytes(data_bytes + scales * int64_t{sizeof(float)}, device);
  return {carve(block, 0, sizes, dtype_of(format)),
          carve(block, data_bytes, scale_sizes, at::kFloat)};
}

// The one-launch amax + cast kernels' scratch (kernels/quantize/cast.h: any content) in the
// stream's workspace, with room for `extra_bytes` more after it (at scratch_bytes()).
struct OneLaunchScratch {
  torch::Tensor workspace;
  int64_t words = 0;

  explicit OneLaunchScratch(int64_t extra_bytes = 0) {
    FP8NN_CUDA_CHECK(kernels::amax_cast_scratch_words(&words));
    workspace = stream_workspace(scratch_bytes() + extra_bytes);
  }
  int64_t scratch_bytes() const { return carve_size(words * int64_t{sizeof(unsigned)}); }
  unsigned* scratch() const { return static_cast<unsigned*>(workspace.data_ptr()); }
  float* extra() const {
    return reinterpret_cast<float*>(static_cast<uint8_t*>(workspace.data_ptr()) + scratch_bytes());
  }
};

QuantizedTensor quantize_per_tensor(const torch::Tensor& x, Format format,
                                    const torch::Tensor& amax_given, const torch::Tensor& counts,
                                    torch::Tensor* amax_out) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto input = x.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  auto [data, scale_inv] = data_with_scales(input.sizes(), format, {}, input.device());
  const auto type = high_precision_of(input.scalar_type(), "quantize");
  if (!amax_given.defined()) {
    const OneLaunchScratch scratch;
    float* amax_ptr = nullptr;
    if (amax_out != nullptr) {
      *amax_out = empty({}, at::kFloat, input.device());
      amax_ptr = amax_out->data_ptr<float>();
    }
    FP8NN_CUDA_CHECK(kernels::amax_cast_per_tensor(
        input.data_ptr(), type, input.numel(), kernel_format_of(format), bytes_of(data),
        scale_inv.data_ptr<float>(), scratch.scratch(), scratch.words, stream, counters_of(counts),
        amax_ptr));
    return {std::move(data), std::move(scale_inv), format, 0};
  }
  const auto amax = amax_given.contiguous();
  FP8NN_CUDA_CHECK(kernels::cast_per_tensor(
      input.data_ptr(), type, input.numel(), kernel_format_of(format), amax.data_ptr<float>(),
      bytes_of(data), scale_inv.data_ptr<float>(), stream, counters_of(counts)));
  return {std::move(data), std::move(scale_inv), format, 0};
}

QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   const torch::Tensor& counts, bool power_of_two) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto input = x.contiguous();
  const auto [rows, cols] = rows_cols_of(input);
  const int64_t groups = (cols + group_size - 1) / group_size;
  auto [data, scale_inv] = data_with_scales(input.sizes(), format, {rows, groups}, input.device());
  FP8NN_CUDA_CHECK(kernels::quantize_per_group(
      input.data_ptr(), high_precision_of(input.scalar_type(), "quantize_per_group"), rows, cols,
      group_size, kernel_format_of(format), bytes_of(data), scale_inv.data_ptr<float>(),
      at::cuda::getCurrentCUDAStream(), counters_of(counts), power_of_two,
      tile_load(kernels::TileLoad::kShared, /*read_twice_allowed=*/false)));
  return {std::move(data), std::move(scale_inv), format, group_size};
}

}  // namespace

QuantizedTensor quantize(const torch::Tensor& x, Format format, int64_t group_size,
                         const torch::Tensor& amax, const torch::Tensor& counts,
                         torch::Tensor* amax_out, bool power_of_two) {
  TORCH_INTERNAL_ASSERT(group_size > 0 || !power_of_two,
                        "fp8nn: power-of-two scales are for per-group and per-block quantization");
  return group_size > 0 ? quantize_per_group(x, format, group_size, counts, power_of_two)
                        : quantize_per_tensor(x, format, amax, counts, amax_out);
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax_given, const torch::Tensor& counts,
                                      torch::Tensor* column_sums) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t rows = input.size(0), cols = input.size(1);
  // scale_inv goes with the transposed copy, which a layer keeps for backward: the row-major one
  // is freed after the forward product.
  auto data = empty({rows, cols}, dtype_of(format), input.device());
  torch::Tensor data_t, scale_inv;
  std::tie(data_t, scale_inv) = data_with_scales({cols, rows}, format, {}, input.device());
  const auto type = high_precision_of(input.scalar_type(), "quantize_with_transpose");
  bool summed = false;
  if (!amax_given.defined()) {
    // The column sums' partials (only where the one launch takes them) share the workspace.
    const bool sums_wanted =
        column_sums != nullptr && rows * cols <= kernels::kOneLaunchMaxElements;
    const OneLaunchScratch scratch(
        sums_wanted ? kernels::column_sums_partial_rows(rows) * cols * int64_t{sizeof(float)} : 0);
    const auto launch = [&](float* sums, float* partial_sums) {
      return kernels::amax_cast_transpose_per_tensor(
          input.data_ptr(), type, rows, cols, kernel_format_of(format), bytes_of(data),
          bytes_of(data_t), scale_inv.data_ptr<float>(), scratch.scratch(), scratch.words, stream,
          counters_of(counts), sums, partial_sums);
    };
    if (sums_wanted) {
      auto sums = empty({cols}, at::kFloat, input.device());
      const cudaError_t status = launch(sums.data_ptr<float>(), scratch.extra());
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
  // scale_inv goes with the copy a layer keeps for backward: the transposed one when there is one.
  torch::Tensor data, data_t, scale_inv;
  if (with_transpose) {
    data = empty(input.sizes(), dtype_of(format), input.device());
    std::tie(data_t, scale_inv) =
        data_with_scales({input.size(1), input.size(0)}, format, {}, input.device());
  } else {
    std::tie(data, scale_inv) = data_with_scales(input.sizes(), format, {}, input.device());
  }
  kernels::DelayedScalingArgs args;
  torch::Tensor amax;  // the first call's, for current scaling
  if (delayed.first) {
    amax = empty({}, at::kFloat, input.device());
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
  FP8NN_CUDA_CHECK(kernels::cast_transpose_per_tensor(
      input.data_ptr(), type, rows, cols, kernel_format_of(format), amax_ptr, bytes_of(data),
      bytes_of(data_t), scale_inv.data_ptr<float>(), stream, counters_of(counts), args));
  return {{std::move(data), scale_inv, format, 0}, {std::move(data_t), scale_inv, format, 0}};
}

QuantizedPair quantize_per_block(const torch::Tensor& x2d, Format format, bool with_transpose,
                                 const torch::Tensor& counts, bool power_of_two, bool row_copy) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const int64_t rows = input.size(0), cols = input.size(1);
  const int64_t block_rows = (rows + kBlockSize - 1) / kBlockSize;
  const int64_t block_cols = (cols + kBlockSize - 1) / kBlockSize;
  // Each copy with its scales in one block, as they are used and saved together. Without the row
  // copy, its scales alone (the kernel writes them in any case).
  torch::Tensor data, scale_inv;
  if (row_copy) {
    std::tie(data, scale_inv) =
        data_with_scales({rows, cols}, format, {block_rows, block_cols}, input.device());
  } else {
    scale_inv = empty({block_rows, block_cols}, at::kFloat, input.device());
  }
  torch::Tensor data_t, scale_inv_t;
  if (with_transpose) {
    std::tie(data_t, scale_inv_t) =
        data_with_scales({cols, rows}, format, {block_cols, block_rows}, input.device());
  }
  FP8NN_CUDA_CHECK(kernels::quantize_per_block(
      input.data_ptr(), high_precision_of(input.scalar_type(), "quantize_per_block"), rows, cols,
      kernel_format_of(format), row_copy ? bytes_of(data) : nullptr,
      with_transpose ? bytes_of(data_t) : nullptr, scale_inv.data_ptr<float>(), block_cols,
      with_transpose ? scale_inv_t.data_ptr<float>() : nullptr, block_rows,
      at::cuda::getCurrentCUDAStream(), counters_of(counts), power_of_two,
      tile_load(kernels::TileLoad::kRegisters, /*read_twice_allowed=*/true)));
  QuantizedPair q;
  q.quantized = {std::move(data), std::move(scale_inv), format, kBlockSize, kBlockSize};
  if (with_transpose) {
    q.transposed = {std::move(data_t), std::move(scale_inv_t), format, kBlockSize, kBlockSize};
  }
  return q;
}

QuantizedPair quantize_per_group_with_transpose(const torch::Tensor& x2d, Format format,
                                                const torch::Tensor& counts, bool power_of_two) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const int64_t rows = input.size(0), cols = input.size(1);
  const int64_t groups = (cols + kBlockSize - 1) / kBlockSize;
  const int64_t groups_t = (rows + kBlockSize - 1) / kBlockSize;
  // Each copy with its scales in one block, as they are used and saved together.
  auto [data, scale_inv] = data_with_scales({rows, cols}, format, {rows, groups}, input.device());
  auto [data_t, scale_inv_t] =
      data_with_scales({cols, rows}, format, {cols, groups_t}, input.device());
  FP8NN_CUDA_CHECK(kernels::quantize_per_group_with_transpose(
      input.data_ptr(), high_precision_of(input.scalar_type(), "quantize_per_group_with_transpose"),
      rows, cols, kernel_format_of(format), bytes_of(data), scale_inv.data_ptr<float>(),
      bytes_of(data_t), scale_inv_t.data_ptr<float>(), at::cuda::getCurrentCUDAStream(),
      counters_of(counts), power_of_two,
      tile_load(kernels::TileLoad::kShared, /*read_twice_allowed=*/false)));
  return {{std::move(data), std::move(scale_inv), format, kBlockSize},
          {std::move(data_t), std::move(scale_inv_t), format, kBlockSize}};
}

QuantizedTensor quantize_transposed(const torch::Tensor& x2d, Format format,
                                    const torch::Tensor& amax_given) {
  const c10::cuda::CUDAGuard guard(x2d.device());
  const auto input = x2d.contiguous();
  const auto amax = amax_given.contiguous();
  const int64_t rows = input.size(0), cols = input.size(1);
  auto [data_t, scale_inv] = data_with_scales({cols, rows}, format, {}, input.device());
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
  auto out = empty(data.sizes(), dtype, data.device());
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

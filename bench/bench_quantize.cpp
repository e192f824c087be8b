// Quantize benchmark: each op's effective bandwidth (the minimum bytes the op must read and write,
// over its time) next to a device-to-device copy measured in the same run. Inputs are bf16 and
// rotated through buffers that together exceed 2x L2, so every run reads from DRAM.
//
// Rows (min bytes for N elements of bf16: read 2N, each FP8 copy written N):
//   copy                   cudaMemcpyAsync of the input              read 2N + write 2N
//   amax                   amax_per_tensor                           read 2N
//   cast (amax+cast)       amax_per_tensor + cast_per_tensor         read 2N + write N
//   cast, amax given       cast_per_tensor (amax already known)      read 2N + write N
//   cast (one launch)      amax_cast_per_tensor (cooperative)        read 2N + write N
//   cast+transpose (+amax) amax_per_tensor + cast_transpose          read 2N + write 2N
//   cast+transpose, amax given  cast_transpose (amax known)          read 2N + write 2N
//   cast+T (one launch)    amax_cast_transpose_per_tensor            read 2N + write 2N
//   cast+T+sums (one l.)   the same with the column sums (dy's bias gradient; up to
//                          kOneLaunchMaxElements elements, the one launch's range)
// Above kOneLaunchMaxElements the "one launch" calls take their two launches (cast.h).
//   per-group G=128        quantize_per_group (one pass)             read 2N + write N + 4N/128
//   per-group G=row        the same with one group per row (Mixed where G >= K)
//   per-group G=row shared the same, rows longer than the registers hold staged in shared memory
//   per-group 1x128 (+T 128x1)  quantize_per_group_with_transpose    read 2N + write 2N + scales
//   per-group 1x128 (+T) shared  the same, each tile staged in shared memory (TileLoad::kShared)
//   per-block 128x128 (+T) quantize_per_block, both copies           read 2N + write 2N + scales
//   per-block ... read twice  the same, each block read twice (the second from L2)
//   per-block ... shared   the same, each block staged in shared memory
//   per-block fp32 ...     the same three on fp32 input of the same bytes (half the rows): the
//                          master weights' case
// Per-tensor current scaling needs amax before the cast, so "amax+cast" and "cast+transpose
// (+amax)" read the input twice: their bytes moved exceed the minimum by 2N (the "moved" column).
// The "amax given" rows are the one-pass case of quantize(x, format, amax), e.g. with the amax
// from the epilogue of the GEMM that produced x.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench.h"
#include "common/error.h"
#include "kernels/quantize/amax.h"
#include "kernels/quantize/cast.h"
#include "kernels/quantize/cast_transpose.h"
#include "kernels/quantize/quantize_per_block.h"
#include "kernels/quantize/quantize_per_group.h"
#include "kernels/quantize/quantize_per_group_transpose.h"

namespace fp8nn::bench {
namespace {

struct Shape {
  std::string name;
  int64_t rows, cols;
};

const std::vector<Shape> kShapes = {
    {"x 1024x1024", 1024, 1024},   {"x 2048x2048", 2048, 2048},   {"x 4096x4096", 4096, 4096},
    {"x 8192x4096", 8192, 4096},   {"x 16384x8192", 16384, 8192}, {"W 4096x4096", 4096, 4096},
    {"W 14336x4096", 14336, 4096},
};

constexpr int64_t kGroupSize = 128;

// One small device buffer, not rotated (a scalar or a kernel's scratch; RotatingBuffers would
// allocate 2 x L2 of them).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t bytes) {
    FP8NN_CUDA_CHECK(cudaMalloc(&data_, std::max<int64_t>(bytes, 1)));
    FP8NN_CUDA_CHECK(cudaMemset(data_, 0, std::max<int64_t>(bytes, 1)));
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
};

// bf16 values from a normal distribution with a spread of magnitudes (bf16 = high half of fp32).
std::vector<uint16_t> random_bf16(int64_t n) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> values(static_cast<size_t>(n));
  std::vector<uint16_t> pattern(1 << 20);
  for (auto& v : pattern) {
    const float f = normal(rng) * std::exp(normal(rng));
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    v = static_cast<uint16_t>(bits >> 16);
  }
  for (int64_t i = 0; i < n; ++i) values[i] = pattern[(i * 7919) % pattern.size()];
  return values;
}

void print_row(const Shape& shape, const char* op, double us, double min_bytes, double moved_bytes,
               double copy_gbps) {
  const double gbps = min_bytes / (us * 1e3);
  fmt::print("| {:<13} | {:<26} | {:>9.1f} | {:>8.1f} | {:>8.1f} | {:>8.0f} | {:>5.1f}% |\n",
             shape.name, op, us, min_bytes / 1e6, moved_bytes / 1e6, gbps,
             100.0 * gbps / copy_gbps);
}

}  // namespace

void run_quantize(const Options& options) {
  cudaStream_t stream;
  FP8NN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  fmt::print("# fp8nn quantize bench on {}; bf16 input, median of {} samples x {} launches\n",
             device_description(), options.samples, options.batch);
  fmt::print("# eff GB/s = minimum bytes (read + write) / time; % of the same-run D2D copy GB/s\n");
  fmt::print("| {:<13} | {:<26} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} |\n", "shape", "op",
             "time us", "min MB", "moved MB", "eff GB/s", "% copy");
  fmt::print("|{:-<15}|{:-<28}|{:-<11}|{:-<10}|{:-<10}|{:-<10}|{:-<8}|\n", "", "", "", "", "", "",
             "");
  const auto bf16 = kernels::HighPrecision::kBFloat16;
  const auto e4m3 = kernels::Fp8Format::kE4M3;
  // --shape M,K,N: the layer's x [M, K] and W [N, K] instead of the default list (e.g. one
  // large tensor for a profiler run).
  std::vector<Shape> shapes;
  for (const auto& [m, k, n] : options.shapes) {
    shapes.push_back({fmt::format("x {}x{}", m, k), m, k});
    shapes.push_back({fmt::format("W {}x{}", n, k), n, k});
  }
  if (shapes.empty()) shapes = kShapes;
  for (const auto& shape : shapes) {
    const int64_t n = shape.rows * shape.cols;
    const int64_t in_bytes = 2 * n;
    RotatingBuffers x(in_bytes, 3), copy_dst(in_bytes, 3), out(n, 3), out_t(n, 3);
    DeviceBuffer scalars(4 * 4);  // amax, scale_inv
    // Room for two scale matrices of one value per 128 elements (with ragged edges).
    RotatingBuffers group_scales(8 * (n / kGroupSize + shape.rows + shape.cols) + 16, 3);
    int64_t scratch_words = 0;
    FP8NN_CUDA_CHECK(kernels::amax_cast_scratch_words(&scratch_words));
    DeviceBuffer scratch(4 * scratch_words), sums(4 * shape.cols),
        partial_sums(4 * kernels::column_sums_partial_rows(shape.rows) * shape.cols);
    auto* scratch_u32 = scratch.as<unsigned>();
    {
      const auto host = random_bf16(n);
      for (int i = 0; i < x.count(); ++i) {
        FP8NN_CUDA_CHECK(cudaMemcpy(x[i], host.data(), in_bytes, cudaMemcpyHostToDevice));
      }
    }
    float* amax = scalars.as<float>();
    float* scale_inv = amax + 1;
    const auto u8 = [](void* p) { return static_cast<uint8_t*>(p); };

    const double copy_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(
          cudaMemcpyAsync(copy_dst[i], x[i], in_bytes, cudaMemcpyDeviceToDevice, stream));
    });
    const double copy_gbps = 2.0 * in_bytes / (copy_us * 1e3);
    print_row(shape, "D2D copy", copy_us, 2.0 * in_bytes, 2.0 * in_bytes, copy_gbps);

    const double amax_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::amax_per_tensor(x[i], bf16, n, amax, stream));
    });
    print_row(shape, "amax", amax_us, in_bytes, in_bytes, copy_gbps);

    const double cast_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::amax_per_tensor(x[i], bf16, n, amax, stream));
      FP8NN_CUDA_CHECK(
          kernels::cast_per_tensor(x[i], bf16, n, e4m3, amax, u8(out[i]), scale_inv, stream));
    });
    print_row(shape, "cast (amax + cast)", cast_us, in_bytes + n, 2.0 * in_bytes + n, copy_gbps);

    const double cast_alone_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(
          kernels::cast_per_tensor(x[i], bf16, n, e4m3, amax, u8(out[i]), scale_inv, stream));
    });
    print_row(shape, "cast, amax given", cast_alone_us, in_bytes + n, in_bytes + n, copy_gbps);

    const double cast_one_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::amax_cast_per_tensor(x[i], bf16, n, e4m3, u8(out[i]), scale_inv,
                                                     scratch_u32, scratch_words, stream));
    });
    print_row(shape, "cast (one launch)", cast_one_us, in_bytes + n, 2.0 * in_bytes + n, copy_gbps);

    const double ct_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::amax_per_tensor(x[i], bf16, n, amax, stream));
      FP8NN_CUDA_CHECK(kernels::cast_transpose_per_tensor(x[i], bf16, shape.rows, shape.cols, e4m3,
                                                          amax, u8(out[i]), u8(out_t[i]), scale_inv,
                                                          stream));
    });
    print_row(shape, "cast+transpose (+amax)", ct_us, in_bytes + 2.0 * n, 2.0 * in_bytes + 2.0 * n,
              copy_gbps);

    const double ct_alone_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::cast_transpose_per_tensor(x[i], bf16, shape.rows, shape.cols, e4m3,
                                                          amax, u8(out[i]), u8(out_t[i]), scale_inv,
                                                          stream));
    });
    print_row(shape, "cast+transpose, amax given", ct_alone_us, in_bytes + 2.0 * n,
              in_bytes + 2.0 * n, copy_gbps);

    const double ct_one_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::amax_cast_transpose_per_tensor(
          x[i], bf16, shape.rows, shape.cols, e4m3, u8(out[i]), u8(out_t[i]), scale_inv,
          scratch_u32, scratch_words, stream));
    });
    print_row(shape, "cast+T (one launch)", ct_one_us, in_bytes + 2.0 * n, 2.0 * in_bytes + 2.0 * n,
              copy_gbps);

    // The column sums exist in the one launch only, which larger tensors do not take.
    if (n <= kernels::kOneLaunchMaxElements) {
      const double ct_sums_us = median_us(options, stream, [&](int i) {
        FP8NN_CUDA_CHECK(kernels::amax_cast_transpose_per_tensor(
            x[i], bf16, shape.rows, shape.cols, e4m3, u8(out[i]), u8(out_t[i]), scale_inv,
            scratch_u32, scratch_words, stream, nullptr, sums.as<float>(),
            partial_sums.as<float>()));
      });
      print_row(shape, "cast+T+sums (one launch)", ct_sums_us, in_bytes + 2.0 * n,
                2.0 * in_bytes + 2.0 * n, copy_gbps);
    }

    const double scale_bytes = 4.0 * shape.rows * ((shape.cols + kGroupSize - 1) / kGroupSize);
    const double group_us = median_us(options, stream, [&](int i) {
      FP8NN_CUDA_CHECK(kernels::quantize_per_group(x[i], bf16, shape.rows, shape.cols, kGroupSize,
                                                   e4m3, u8(out[i]),
                                                   static_cast<float*>(group_scales[i]), stream));
    });
    print_row(shape, "per-group G=128", group_us, in_bytes + n + scale_bytes,
              in_bytes + n + scale_bytes, copy_gbps);
    // One group per row: Mixed's default wherever its group size reaches K; read into registers
    // (a long row twice: the second time from L1/L2) and staged in shared memory.
    for (const auto load : {kernels::TileLoad::kRegisters, kernels::TileLoad::kShared}) {
      const double row_us = median_us(options, stream, [&](int i) {
        FP8NN_CUDA_CHECK(kernels::quantize_per_group(
            x[i], bf16, shape.rows, shape.cols, shape.cols, e4m3, u8(out[i]),
            static_cast<float*>(group_scales[i]), stream, nullptr, false, load));
      });
      print_row(
          shape, load == kernels::TileLoad::kShared ? "per-group G=row shared" : "per-group G=row",
          row_us, in_bytes + n + 4.0 * shape.rows, in_bytes + n + 4.0 * shape.rows, copy_gbps);
    }
    // Per 1x128 along the rows and per 128x1 (the transposed copy) in one pass: the blockwise
    // recipe's x and dy.
    const double group_t_scale_bytes =
        scale_bytes + 4.0 * shape.cols * ((shape.rows + kGroupSize - 1) / kGroupSize);
    for (const auto load : {kernels::TileLoad::kRegisters, kernels::TileLoad::kShared}) {
      const double group_t_us = median_us(options, stream, [&](int i) {
        auto* scales = static_cast<float*>(group_scales[i]);
        const int64_t row_scales = shape.rows * ((shape.cols + kGroupSize - 1) / kGroupSize);
        FP8NN_CUDA_CHECK(kernels::quantize_per_group_with_transpose(
            x[i], bf16, shape.rows, shape.cols, e4m3, u8(out[i]), scales, u8(out_t[i]),
            scales + row_scales, stream, nullptr, false, load));
      });
      print_row(shape,
                load == kernels::TileLoad::kShared ? "per-group 1x128 (+T) shared"
                                                   : "per-group 1x128 (+T 128x1)",
                group_t_us, in_bytes + 2.0 * n + group_t_scale_bytes,
                in_bytes + 2.0 * n + group_t_scale_bytes, copy_gbps);
    }

    const int64_t blocks_r = (shape.rows + kernels::kScaleBlock - 1) / kernels::kScaleBlock;
    const int64_t blocks_c = (shape.cols + kernels::kScaleBlock - 1) / kernels::kScaleBlock;
    const double block_scale_bytes = 2.0 * 4 * blocks_r * blocks_c;
    // Each way of reading a block (tile_load.h); the read-twice kernel moves the input twice.
    const std::vector<kernels::TileLoad> block_loads = {
        kernels::TileLoad::kRegisters, kernels::TileLoad::kReadTwice, kernels::TileLoad::kShared};
    const auto load_name = [](kernels::TileLoad load, bool fp32) {
      return load == kernels::TileLoad::kReadTwice
                 ? (fp32 ? "per-block fp32 read twice" : "per-block (+T) read twice")
             : load == kernels::TileLoad::kShared
                 ? (fp32 ? "per-block fp32 shared" : "per-block (+T) shared")
                 : (fp32 ? "per-block fp32 (+T)" : "per-block 128x128 (+T)");
    };
    for (const auto load : block_loads) {
      const double us = median_us(options, stream, [&](int i) {
        auto* scales = static_cast<float*>(group_scales[i]);
        FP8NN_CUDA_CHECK(kernels::quantize_per_block(
            x[i], bf16, shape.rows, shape.cols, e4m3, u8(out[i]), u8(out_t[i]), scales, blocks_c,
            scales + blocks_r * blocks_c, blocks_r, stream, nullptr, false, load));
      });
      const double min_bytes = in_bytes + 2.0 * n + block_scale_bytes;
      print_row(shape, load_name(load, false), us, min_bytes,
                min_bytes + (load == kernels::TileLoad::kReadTwice ? in_bytes : 0), copy_gbps);
    }
    // fp32 input (master weights), the same bytes: half the rows.
    const int64_t rows32 = shape.rows / 2, n32 = rows32 * shape.cols;
    const int64_t blocks_r32 = (rows32 + kernels::kScaleBlock - 1) / kernels::kScaleBlock;
    const double block_scale_bytes32 = 2.0 * 4 * blocks_r32 * blocks_c;
    for (const auto load : block_loads) {
      const double us = median_us(options, stream, [&](int i) {
        auto* scales = static_cast<float*>(group_scales[i]);
        FP8NN_CUDA_CHECK(kernels::quantize_per_block(
            x[i], kernels::HighPrecision::kFloat32, rows32, shape.cols, e4m3, u8(out[i]),
            u8(out_t[i]), scales, blocks_c, scales + blocks_r32 * blocks_c, blocks_r32, stream,
            nullptr, false, load));
      });
      const double min_bytes = in_bytes + 2.0 * n32 + block_scale_bytes32;
      print_row(shape, load_name(load, true), us, min_bytes,
                min_bytes + (load == kernels::TileLoad::kReadTwice ? in_bytes : 0), copy_gbps);
    }
    FP8NN_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  FP8NN_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace fp8nn::bench

#pragma once
// Device memory for the CUDA host code, cheaper to get than at::empty where a call makes several
// buffers: outputs carved from one caching-allocator block, and a workspace per stream for the
// buffers that die within a call (kernel scratch, cuBLASLt's workspace), so that a warm call
// allocates only what it hands back. Included by CUDA host code only (src/*/cuda/).

#include <ATen/ATen.h>

#include <cstdint>

namespace fp8nn::cuda {

/// The byte offsets at which carve() places buffers: every buffer starts on this boundary.
constexpr int64_t kCarveAlignment = 256;

/// `bytes` rounded up to kCarveAlignment.
constexpr int64_t carve_size(int64_t bytes) {
  return (bytes + kCarveAlignment - 1) / kCarveAlignment * kCarveAlignment;
}

/// An uninitialised contiguous tensor on the CUDA `device`, from the caching allocator on the
/// current stream: at::empty without the dispatcher.
at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype, c10::Device device);

/// empty({bytes}, at::kByte, device): a block to carve() buffers from.
at::Tensor empty_bytes(int64_t bytes, c10::Device device);

/// A contiguous tensor of `sizes` and `dtype` that views `block`'s memory from byte `offset` (a
/// multiple of kCarveAlignment): it shares, and keeps alive, the whole block.
at::Tensor carve(const at::Tensor& block, int64_t offset, at::IntArrayRef sizes,
                 at::ScalarType dtype);

/// Scratch of at least `bytes` bytes for work enqueued on the current stream of the current
/// device by the caller, before it calls this again. Outside a stream capture it is one block per
/// (device, stream), kept and grown as needed: work on one stream runs in order, so each call may
/// reuse it. Inside a capture it is a new allocation (from the graph's pool), so a graph never
/// shares memory with eager work. Hold the returned tensor until the work is enqueued.
at::Tensor stream_workspace(int64_t bytes);

}  // namespace fp8nn::cuda

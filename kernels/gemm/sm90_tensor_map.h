#pragma once
// Host side of the Hopper (sm_90a) kernels' TMA loads: the tensor maps (CUtensorMap) that describe
// a global tensor and the box a cp.async.bulk.tensor copies. The driver's encoder is reached
// through cudart (cudaGetDriverEntryPointByVersion), so nothing links against libcuda.

#include <cuda.h>  // CUtensorMap and its enums (types only: the driver is reached through cudart)
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fp8nn::kernels::sm90 {

// The driver's cuTensorMapEncodeTiled, looked up once; null when the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder();

// Encodes a 2D tensor of `type` elements at `data`: `inner` contiguous elements per line, `outer`
// lines `outer_stride_bytes` apart, read in boxes of box_inner x box_outer elements with
// `swizzle`. Parts of a box outside the tensor read as zeros; lines are promoted to L2 in 256-byte
// requests. Returns cudaErrorNotSupported when the driver has no encoder, cudaErrorInvalidValue
// when it rejects the description (alignment, sizes, box).
cudaError_t encode_tensor_map_2d(CUtensorMap* map, CUtensorMapDataType type, const void* data,
                                 uint64_t inner, uint64_t outer, uint64_t outer_stride_bytes,
                                 uint32_t box_inner, uint32_t box_outer,
                                 CUtensorMapSwizzle swizzle);

}  // namespace fp8nn::kernels::sm90

// cuBLASLt FP8 matmul (see cublaslt_gemm.h). Row-major TN maps onto cuBLASLt's column-major
// D = op(A) op(B) by computing out^T:
//   out [M, N] row-major  == D, column-major N x M, ld N
//   b   [N, K] row-major  == A, column-major K x N, ld K, TRANSA = T  -> op(A) is N x K
//   a   [M, K] row-major  == B, column-major K x M, ld K, TRANSB = N  -> op(B) is K x M
// so cuBLASLt's (m, n, k) is our (N, M, K), its A/B scales are b's/a's, and the epilogue bias
// (one value per row of D) is our bias[N].

#include "gemm/cuda/cublaslt_gemm.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/cuda/device_memory.h"
#include "common/error.h"

// Per-row and block scales (OUTER_VEC_32F, VEC128_32F, BLK128x128_32F, A/B_SCALE_MODE) arrived
// in cuBLAS 12.9; older headers lack them.
#if defined(CUBLAS_VERSION) && CUBLAS_VERSION >= 120900
#define FP8NN_HAVE_OUTER_VEC_SCALES 1
#else
#define FP8NN_HAVE_OUTER_VEC_SCALES 0
#endif

namespace fp8nn::cuda {
namespace {

// NVIDIA's recommended cuBLASLt workspace on Hopper.
constexpr uint64_t kWorkspaceBytes = uint64_t{32} << 20;
// The workspace every call gets at least, whatever the algorithm's stated minimum: given only
// that minimum (4 bytes for Hopper's FP8 kernels), the same algorithm and tile ran about 9% slower
// than at::_scaled_mm's call with torch's 1 MiB cuBLASLt workspace (fp8nn_bench gemm, H200).
constexpr size_t kCallWorkspaceBytes = size_t{1} << 20;

size_t call_workspace_bytes(size_t needed) { return std::max(needed, kCallWorkspaceBytes); }
// The largest pointer alignment cuBLASLt asks about (its default assumption, in bytes).
constexpr uint32_t kMaxAlignmentBytes = 256;

cudaDataType_t cuda_type_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat8_e4m3fn:
      return CUDA_R_8F_E4M3;
    case at::kFloat8_e5m2:
      return CUDA_R_8F_E5M2;
    case at::kBFloat16:
      return CUDA_R_16BF;
    case at::kHalf:
      return CUDA_R_16F;
    case at::kFloat:
      return CUDA_R_32F;
    default:
      TORCH_INTERNAL_ASSERT(false, "fp8nn: no cuBLASLt type for ", dtype);
  }
}

// Largest power of two (up to 256) dividing the address: what cuBLASLt may assume about a buffer.
uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = kMaxAlignmentBytes;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// One handle per device, created on first use and kept for the life of the process (destroying it
// from a static destructor can run after the CUDA context is gone).
cublasLtHandle_t handle_for(c10::DeviceIndex device) {
  static std::mutex mutex;
  static std::vector<cublasLtHandle_t> handles;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto index = static_cast<size_t>(device);
  if (handles.size() <= index) handles.resize(index + 1, nullptr);
  if (handles[index] == nullptr) {
    const c10::cuda::CUDAGuard guard(device);
    FP8NN_CUBLAS_CHECK(cublasLtCreate(&handles[index]));
  }
  return handles[index];
}

// Owning wrappers for cuBLASLt's descriptors (their destroy calls cannot fail usefully here).
struct DescDeleter {
  void operator()(cublasLtMatmulDesc_t desc) const { cublasLtMatmulDescDestroy(desc); }
  void operator()(cublasLtMatrixLayout_t layout) const { cublasLtMatrixLayoutDestroy(layout); }
  void operator()(cublasLtMatmulPreference_t pref) const { cublasLtMatmulPreferenceDestroy(pref); }
};
template <typename Handle>
using Owned = std::unique_ptr<std::remove_pointer_t<Handle>, DescDeleter>;

// Sets one attribute of a matmul descriptor or preference from a value of its type (an lvalue).
#define FP8NN_SET_DESC(desc, attribute, value) \
  FP8NN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &(value), sizeof(value)))
#define FP8NN_SET_PREF(pref, attribute, value) \
  FP8NN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &(value), sizeof(value)))

Owned<cublasLtMatrixLayout_t> column_major(cudaDataType_t type, int64_t rows, int64_t cols,
                                           int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  FP8NN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                                static_cast<uint64_t>(cols), ld));
  return Owned<cublasLtMatrixLayout_t>(layout);
}

#if FP8NN_HAVE_OUTER_VEC_SCALES
int32_t lt_scale_mode(ScaleMode mode) {
  switch (mode) {
    case ScaleMode::PerTensor:
      return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    case ScaleMode::PerRow:
      return CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    case ScaleMode::Vec128:
      return CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    case ScaleMode::Block128x128:
      return CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  }
  TORCH_INTERNAL_ASSERT(false, "fp8nn: unknown cuBLASLt scale mode");
}
#endif

bool is_block_mode(ScaleMode mode) {
  return mode == ScaleMode::Vec128 || mode == ScaleMode::Block128x128;
}

// The pairings cublaslt_scaled_mm accepts (see ScaleMode).
bool valid_pairing(ScaleMode a, ScaleMode b) {
  if (!is_block_mode(a) && !is_block_mode(b)) return a == b;
  return (a == ScaleMode::Vec128 && is_block_mode(b)) ||
         (b == ScaleMode::Vec128 && is_block_mode(a));
}

// Everything cuBLASLt's heuristic sees. The algorithm it picks depends on the problem, the types,
// the epilogue, the accumulation and scale modes, and the alignment of the buffers.
struct AlgoKey {
  int device;
  int64_t m, n, k;
  int a_type, b_type, d_type, bias_type;  // bias_type -1: no bias
  bool fast_accumulation;
  int a_mode, b_mode;  // ScaleMode of cuBLASLt's A (our b) and B (our a)
  uint32_t align_a, align_b, align_d, align_bias, align_scales;

  auto tie() const {
    return std::tie(device, m, n, k, a_type, b_type, d_type, bias_type, fast_accumulation, a_mode,
                    b_mode, align_a, align_b, align_d, align_bias, align_scales);
  }
  bool operator<(const AlgoKey& other) const { return tie() < other.tie(); }
};

struct CachedAlgo {
  bool supported = false;  // false: cuBLASLt has no algorithm; take another path
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
};

std::mutex algo_cache_mutex;
std::map<AlgoKey, CachedAlgo> algo_cache;

// The descriptors of one problem, made once per thread (cuBLASLt descriptors are not shared
// between threads, since each call sets its own scale and bias pointers on them).
struct Descriptors {
  Owned<cublasLtMatmulDesc_t> desc;
  Owned<cublasLtMatrixLayout_t> a, b, d;
};

// What cuBLASLt answers when the combination is simply not available (as opposed to misuse).
bool is_refusal(cublasStatus_t status) {
  return status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE;
}

void warn_refusal(cublasStatus_t status, const char* where) {
  // NOT_SUPPORTED is an expected answer (e.g. an older GPU); INVALID_VALUE for a configuration
  // the documentation allows is worth knowing about, since the fallback is much slower.
  if (status == CUBLAS_STATUS_INVALID_VALUE) {
    TORCH_WARN_ONCE("fp8nn::scaled_mm: cuBLASLt answered ", cublasLtGetStatusString(status),
                    " from ", where, "; using the slower fallback path for this problem");
  }
}

// Returns nullptr when this cuBLASLt cannot express the scale mode.
Descriptors* descriptors_for(const AlgoKey& key, cudaDataType_t lt_a_type, cudaDataType_t lt_b_type,
                             cudaDataType_t d_type) {
  thread_local std::map<AlgoKey, Descriptors> cache;
  const auto found = cache.find(key);
  if (found != cache.end()) return &found->second;
#if !FP8NN_HAVE_OUTER_VEC_SCALES
  // This cuBLASLt scales per tensor only.
  if (key.a_mode != static_cast<int>(ScaleMode::PerTensor)) return nullptr;
#endif
  cublasLtMatmulDesc_t raw_desc = nullptr;
  FP8NN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  Descriptors made;
  made.desc.reset(raw_desc);
  cublasLtMatmulDesc_t desc = made.desc.get();
  const cublasOperation_t transa = CUBLAS_OP_T;
  const cublasOperation_t transb = CUBLAS_OP_N;
  FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_TRANSA, transa);
  FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_TRANSB, transb);
#if FP8NN_HAVE_OUTER_VEC_SCALES
  // Per row: one fp32 scale per row of op(A) (our b: N values) and per column of op(B) (our a: M
  // values). Blocks: along cuBLASLt's K, which is each operand's inner dimension here.
  if (key.a_mode != static_cast<int>(ScaleMode::PerTensor)) {
    const int32_t a_mode = lt_scale_mode(static_cast<ScaleMode>(key.a_mode));
    const int32_t b_mode = lt_scale_mode(static_cast<ScaleMode>(key.b_mode));
    FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, a_mode);
    FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, b_mode);
  }
#endif
  const int8_t fast_accum = key.fast_accumulation ? 1 : 0;
  FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast_accum);
  if (key.bias_type >= 0) {
    // Bias of the output's type (bf16 for bf16 D, fp16 for fp16 D: cuBLASLt's FP8 table), one
    // value per row of D, added in fp32 before the output is rounded.
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bias_type = key.bias_type;
    FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
    FP8NN_SET_DESC(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bias_type);
  }
  // cuBLASLt's (m, n, k) is our (N, M, K).
  made.a = column_major(lt_a_type, key.k, key.m, key.k);
  made.b = column_major(lt_b_type, key.k, key.n, key.k);
  made.d = column_major(d_type, key.m, key.n, key.m);  // also C (beta = 0)
  return &cache.emplace(key, std::move(made)).first->second;
}

// The heuristic's candidates for the problem (up to `wanted`), best first by its estimate.
std::vector<cublasLtMatmulHeuristicResult_t> heuristic_candidates(cublasLtHandle_t handle,
                                                                  const AlgoKey& key,
                                                                  const Descriptors& d,
                                                                  int wanted) {
  cublasLtMatmulPreference_t raw_pref = nullptr;
  FP8NN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref));
  const Owned<cublasLtMatmulPreference_t> pref(raw_pref);
  FP8NN_SET_PREF(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, kWorkspaceBytes);
  // The heuristic assumes 256-byte aligned buffers unless told otherwise.
  FP8NN_SET_PREF(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
  FP8NN_SET_PREF(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
  FP8NN_SET_PREF(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d);
  FP8NN_SET_PREF(pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d);
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(wanted));
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle, d.desc.get(), d.a.get(), d.b.get(), d.d.get(),
                                     d.d.get(), pref.get(), wanted, results.data(), &returned);
  if (status != CUBLAS_STATUS_SUCCESS) {
    if (!is_refusal(status)) FP8NN_CUBLAS_CHECK(status);
    warn_refusal(status, "cublasLtMatmulAlgoGetHeuristic");
    return {};
  }
  results.resize(static_cast<size_t>(std::max(returned, 0)));
  results.erase(std::remove_if(results.begin(), results.end(),
                               [](const auto& r) { return r.state != CUBLAS_STATUS_SUCCESS; }),
                results.end());
  return results;
}

// How many of the heuristic's candidates autotuning times.
constexpr int kAutotuneCandidates = 16;

std::atomic<int> autotuning_setting{-1};  // -1: not decided yet (FP8NN_GEMM_AUTOTUNE decides)

bool autotuning_enabled() {
  int setting = autotuning_setting.load();
  if (setting < 0) {
    const char* env = std::getenv("FP8NN_GEMM_AUTOTUNE");
    setting = env != nullptr && std::string(env) == "1" ? 1 : 0;
    int expected = -1;
    autotuning_setting.compare_exchange_strong(expected, setting);
    setting = autotuning_setting.load();
  }
  return setting == 1;
}

bool stream_is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  FP8NN_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// Times each candidate on the real operands (the output is overwritten by the call that follows)
// and returns the index of the fastest: median of a few runs after one warm-up each. Synchronises
// with the host, once per new problem, which is why autotuning is opt-in.
size_t fastest_candidate(cublasLtHandle_t handle, const Descriptors& d,
                         const std::vector<cublasLtMatmulHeuristicResult_t>& candidates,
                         const void* lt_a, const void* lt_b, void* lt_d, void* workspace,
                         cudaStream_t stream) {
  constexpr int kRuns = 5;
  const float alpha = 1.0f, beta = 0.0f;
  cudaEvent_t events[kRuns + 1];
  for (auto& e : events) FP8NN_CUDA_CHECK(cudaEventCreate(&e));
  size_t best = 0;
  float best_ms = std::numeric_limits<float>::infinity();
  for (size_t c = 0; c < candidates.size(); ++c) {
    const auto& candidate = candidates[c];
    auto launch = [&] {
      return cublasLtMatmul(handle, d.desc.get(), &alpha, lt_a, d.a.get(), lt_b, d.b.get(), &beta,
                            lt_d, d.d.get(), lt_d, d.d.get(), &candidate.algo, workspace,
                            call_workspace_bytes(candidate.workspaceSize), stream);
    };
    if (launch() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that refuses is skipped
    FP8NN_CUDA_CHECK(cudaEventRecord(events[0], stream));
    bool ok = true;
    for (int r = 0; r < kRuns && ok; ++r) {
      ok = launch() == CUBLAS_STATUS_SUCCESS;
      FP8NN_CUDA_CHECK(cudaEventRecord(events[r + 1], stream));
    }
    FP8NN_CUDA_CHECK(cudaEventSynchronize(events[kRuns]));
    if (!ok) continue;
    std::vector<float> ms(kRuns);
    for (int r = 0; r < kRuns; ++r) {
      FP8NN_CUDA_CHECK(cudaEventElapsedTime(&ms[r], events[r], events[r + 1]));
    }
    std::nth_element(ms.begin(), ms.begin() + kRuns / 2, ms.end());
    if (ms[kRuns / 2] < best_ms) {
      best_ms = ms[kRuns / 2];
      best = c;
    }
  }
  for (auto& e : events) FP8NN_CUDA_CHECK(cudaEventDestroy(e));
  return best;
}

}  // namespace

int64_t scale_count(ScaleMode mode, int64_t rows, int64_t k) {
  const int64_t k_blocks = (k + 127) / 128;
  switch (mode) {
    case ScaleMode::PerTensor:
      return 1;
    case ScaleMode::PerRow:
      return rows;
    case ScaleMode::Vec128:
      return k_blocks * rows;
    case ScaleMode::Block128x128:
      return (rows + 127) / 128 * ((k_blocks + 3) / 4 * 4);
  }
  TORCH_INTERNAL_ASSERT(false, "fp8nn: unknown cuBLASLt scale mode");
}

void set_gemm_autotuning(bool enabled) { autotuning_setting.store(enabled ? 1 : 0); }

bool gemm_autotuning() { return autotuning_enabled(); }

bool cublaslt_scaled_mm(const FP8Operand& a, const FP8Operand& b,
                        const c10::optional<torch::Tensor>& bias, torch::Tensor& out,
                        bool fast_accumulation) {
  const int64_t M = a.data.size(0);
  const int64_t K = a.data.size(1);
  const int64_t N = b.data.size(0);
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_INTERNAL_ASSERT(a.data.dim() == 2 && b.data.dim() == 2 && b.data.size(1) == K);
  TORCH_INTERNAL_ASSERT(a.data.is_contiguous() && b.data.is_contiguous() && out.is_contiguous());
  TORCH_INTERNAL_ASSERT(out.size(0) == M && out.size(1) == N);
  TORCH_INTERNAL_ASSERT(M > 0 && K > 0 && K % 16 == 0 && N % 16 == 0,
                        "fp8nn: cuBLASLt FP8 needs K and N multiples of 16 (the caller pads), ",
                        "got M=", M, " K=", K, " N=", N);
  TORCH_INTERNAL_ASSERT(alignment_of(a.data.data_ptr()) >= 16 &&
                        alignment_of(b.data.data_ptr()) >= 16);
  TORCH_INTERNAL_ASSERT(
      !(a.data.scalar_type() == at::kFloat8_e5m2 && b.data.scalar_type() == at::kFloat8_e5m2),
      "fp8nn: cuBLASLt has no e5m2 x e5m2 product");
  TORCH_INTERNAL_ASSERT(valid_pairing(a.mode, b.mode),
                        "fp8nn: cuBLASLt scale modes that do not pair (see ScaleMode)");
  TORCH_INTERNAL_ASSERT(!fast_accumulation || !is_block_mode(a.mode),
                        "fp8nn: cuBLASLt's block scale modes accumulate precisely only");
  TORCH_INTERNAL_ASSERT(a.scale_inv.scalar_type() == at::kFloat &&
                        b.scale_inv.scalar_type() == at::kFloat);
  TORCH_INTERNAL_ASSERT(a.scale_inv.is_contiguous() && b.scale_inv.is_contiguous());
  TORCH_INTERNAL_ASSERT(a.scale_inv.numel() == scale_count(a.mode, M, K) &&
                        b.scale_inv.numel() == scale_count(b.mode, N, K));
  TORCH_INTERNAL_ASSERT(!has_bias || (out.scalar_type() != at::kFloat &&
                                      bias->scalar_type() == out.scalar_type() &&
                                      bias->numel() == N && bias->is_contiguous()));

  const auto device = a.data.device().index();
  const c10::cuda::CUDAGuard guard(a.data.device());
  const cublasLtHandle_t handle = handle_for(device);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device).stream();

  // cuBLASLt's A is our b, its B our a (see the top of the file).
  const void* const lt_a = b.data.data_ptr();
  const void* const lt_b = a.data.data_ptr();
  const void* const lt_a_scale = b.scale_inv.data_ptr();
  const void* const lt_b_scale = a.scale_inv.data_ptr();
  void* const lt_d = out.data_ptr();
  const void* const bias_pointer = has_bias ? bias->data_ptr() : nullptr;
  const cudaDataType_t lt_a_type = cuda_type_of(b.data.scalar_type());
  const cudaDataType_t lt_b_type = cuda_type_of(a.data.scalar_type());
  const cudaDataType_t d_type = cuda_type_of(out.scalar_type());

  const AlgoKey key{device,
                    N,
                    M,
                    K,
                    static_cast<int>(lt_a_type),
                    static_cast<int>(lt_b_type),
                    static_cast<int>(d_type),
                    has_bias ? static_cast<int>(d_type) : -1,
                    fast_accumulation,
                    static_cast<int>(b.mode),
                    static_cast<int>(a.mode),
                    alignment_of(lt_a),
                    alignment_of(lt_b),
                    alignment_of(lt_d),
                    has_bias ? alignment_of(bias_pointer) : 0,
                    std::min(alignment_of(lt_a_scale), alignment_of(lt_b_scale))};

  Descriptors* const d = descriptors_for(key, lt_a_type, lt_b_type, d_type);
  if (d == nullptr) return false;
  // The per-call pointers: scales and bias.
  FP8NN_SET_DESC(d->desc.get(), CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, lt_a_scale);
  FP8NN_SET_DESC(d->desc.get(), CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, lt_b_scale);
  if (has_bias) FP8NN_SET_DESC(d->desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias_pointer);

  CachedAlgo chosen;
  bool cached = false;
  {
    const std::lock_guard<std::mutex> lock(algo_cache_mutex);
    const auto found = algo_cache.find(key);
    if (found != algo_cache.end()) {
      chosen = found->second;
      cached = true;
    }
  }
  // Autotuning's from the caching allocator, the call's from the stream's workspace: both safe to
  // reuse once this call is enqueued, because later work on the stream runs after it.
  torch::Tensor workspace;
  if (!cached) {
    // Autotuning times the candidates, which a stream capture cannot do: there the heuristic's
    // first choice serves, uncached, so that a later eager call still tunes.
    const bool autotune = autotuning_enabled();
    const bool capturing = autotune && stream_is_capturing(stream);
    const bool tune = autotune && !capturing;
    const auto candidates = heuristic_candidates(handle, key, *d, tune ? kAutotuneCandidates : 1);
    if (!candidates.empty()) {
      size_t pick = 0;
      if (tune && candidates.size() > 1) {
        size_t most = call_workspace_bytes(0);
        for (const auto& c : candidates)
          most = std::max(most, call_workspace_bytes(c.workspaceSize));
        workspace = at::empty({static_cast<int64_t>(most)}, a.data.options().dtype(at::kByte));
        pick = fastest_candidate(handle, *d, candidates, lt_a, lt_b, lt_d, workspace.data_ptr(),
                                 stream);
      }
      chosen.supported = true;
      chosen.algo = candidates[pick].algo;
      chosen.workspace_bytes = call_workspace_bytes(candidates[pick].workspaceSize);
    }
    if (!capturing) {
      const std::lock_guard<std::mutex> lock(algo_cache_mutex);
      algo_cache.emplace(key, chosen);
    }
  }
  if (!chosen.supported) return false;

  void* workspace_pointer = nullptr;
  if (chosen.workspace_bytes > 0) {
    if (!workspace.defined() || static_cast<size_t>(workspace.numel()) < chosen.workspace_bytes) {
      workspace = stream_workspace(static_cast<int64_t>(chosen.workspace_bytes));
    }
    workspace_pointer = workspace.data_ptr();
  }
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const cublasStatus_t status = cublasLtMatmul(
      handle, d->desc.get(), &alpha, lt_a, d->a.get(), lt_b, d->b.get(), &beta, lt_d, d->d.get(),
      lt_d, d->d.get(), &chosen.algo, workspace_pointer, chosen.workspace_bytes, stream);
  if (is_refusal(status)) {
    warn_refusal(status, "cublasLtMatmul");
    const std::lock_guard<std::mutex> lock(algo_cache_mutex);
    algo_cache[key].supported = false;
    return false;
  }
  FP8NN_CUBLAS_CHECK(status);
  return true;
}

}  // namespace fp8nn::cuda

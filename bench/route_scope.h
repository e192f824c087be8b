#pragma once
// FP8NN_GROUP_GEMM set for a scope: benchmarks that time one product or layer under several
// routes in one process.

#include <cstdlib>
#include <string>

#include "src/gemm/cuda/group_gemm_cuda.h"

namespace fp8nn::bench {

/// Sets FP8NN_GROUP_GEMM to `route` (the library reads it again on its next product), and puts
/// back what was there, set or not, when the scope ends.
class RouteScope {
 public:
  explicit RouteScope(const char* route) {
    const char* saved = std::getenv("FP8NN_GROUP_GEMM");
    had_previous_ = saved != nullptr;
    if (had_previous_) previous_ = saved;
    setenv("FP8NN_GROUP_GEMM", route, 1);
    fp8nn::cuda::reload_group_gemm_route();
  }
  ~RouteScope() {
    if (had_previous_) {
      setenv("FP8NN_GROUP_GEMM", previous_.c_str(), 1);
    } else {
      unsetenv("FP8NN_GROUP_GEMM");
    }
    fp8nn::cuda::reload_group_gemm_route();
  }
  RouteScope(const RouteScope&) = delete;
  RouteScope& operator=(const RouteScope&) = delete;

 private:
  std::string previous_;
  bool had_previous_ = false;
};

}  // namespace fp8nn::bench

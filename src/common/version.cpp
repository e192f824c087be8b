#include <fp8nn/version.h>

namespace fp8nn {

const char* version() { return FP8NN_VERSION_STRING; }

bool built_with_cuda() {
#ifdef FP8NN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace fp8nn

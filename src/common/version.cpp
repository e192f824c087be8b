#include <fp8nn/version.h>

// FP8NN_VERSION_* are compile definitions of this file alone (CMakeLists.txt), so that a new
// version rebuilds nothing else.

namespace fp8nn {

const char* version() { return FP8NN_VERSION_STRING; }
int version_major() { return FP8NN_VERSION_MAJOR; }
int version_minor() { return FP8NN_VERSION_MINOR; }
int version_patch() { return FP8NN_VERSION_PATCH; }

bool built_with_cuda() {
#ifdef FP8NN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace fp8nn

#pragma once
// Library version and build facts.

namespace fp8nn {

/// "major.minor.patch" of the library the program is linked with.
const char* version();
/// True when the library was built with its CUDA kernels (FP8NN_WITH_CUDA).
bool built_with_cuda();

}  // namespace fp8nn

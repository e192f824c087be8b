#pragma once
// Library version and build facts, from the library the program runs with. At build time,
// find_package(fp8nn) gives CMake the same version (fp8nn_VERSION, fp8nn_VERSION_MAJOR, ...).

namespace fp8nn {

/// "major.minor.patch" of the library the program is linked with, e.g. "1.0.0".
const char* version();
/// The numbers of version(), e.g. 1, 0 and 0.
int version_major();
int version_minor();
int version_patch();
/// True when the library was built with its CUDA kernels (FP8NN_WITH_CUDA).
bool built_with_cuda();

}  // namespace fp8nn

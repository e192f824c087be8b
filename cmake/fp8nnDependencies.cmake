# Finds libtorch (and with it CUDA) and fmt for fp8nn.
#
# libtorch: a user-given Torch_DIR / CMAKE_PREFIX_PATH wins; otherwise the cmake prefix of an
# importable python `torch` (FP8NN_PYTHON, else python3 on PATH). scripts/setup installs one into
# a cache outside the clone when neither exists.

# find_package(Torch) with a CUDA libtorch enables CUDA and derives -gencode flags from
# TORCH_CUDA_ARCH_LIST, auto-detecting the GPU when unset; a machine without one needs a value.
# FP8 tensor cores: sm_89 (Ada) and sm_90a (Hopper, wgmma).
set(FP8NN_CUDA_ARCH_LIST "8.9;9.0a" CACHE STRING
    "CUDA architectures (TORCH_CUDA_ARCH_LIST syntax) when TORCH_CUDA_ARCH_LIST is not set")
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT DEFINED TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "${FP8NN_CUDA_ARCH_LIST}")
endif()

find_package(Torch CONFIG QUIET NO_DEFAULT_PATH PATHS ${Torch_DIR} ENV Torch_DIR)
if(NOT Torch_FOUND)
  # CMAKE_PREFIX_PATH: look without the python fallback first, but do not fail yet.
  find_path(_fp8nn_torch_config TorchConfig.cmake PATH_SUFFIXES share/cmake/Torch
            NO_CACHE NO_CMAKE_SYSTEM_PATH NO_SYSTEM_ENVIRONMENT_PATH)
  if(NOT _fp8nn_torch_config)
    set(FP8NN_PYTHON "" CACHE FILEPATH "python whose torch provides libtorch (when no Torch_DIR)")
    set(_fp8nn_python "${FP8NN_PYTHON}")
    if(NOT _fp8nn_python)
      find_program(_fp8nn_python NAMES python3 python NO_CACHE)
    endif()
    if(_fp8nn_python)
      execute_process(
        COMMAND "${_fp8nn_python}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
        OUTPUT_VARIABLE _fp8nn_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
        RESULT_VARIABLE _fp8nn_rc ERROR_QUIET)
      if(_fp8nn_rc EQUAL 0 AND _fp8nn_torch_prefix)
        message(STATUS "fp8nn: libtorch from ${_fp8nn_python}: ${_fp8nn_torch_prefix}")
        list(APPEND CMAKE_PREFIX_PATH "${_fp8nn_torch_prefix}")
      endif()
    endif()
  endif()
endif()

if(NOT Torch_FOUND)
  find_package(Torch REQUIRED CONFIG)
endif()
message(STATUS "fp8nn: Torch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")

set(FP8NN_CUDA_ENABLED OFF)
# A CUDA libtorch has already enabled CUDA (it needs nvcc and the toolkit to be found at all).
if(CAFFE2_USE_CUDA AND CMAKE_CUDA_COMPILER AND NOT FP8NN_WITH_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit REQUIRED)
  set(FP8NN_CUDA_ENABLED ON)
elseif(FP8NN_WITH_CUDA STREQUAL "ON")
  message(FATAL_ERROR "fp8nn: FP8NN_WITH_CUDA=ON but libtorch at ${TORCH_INSTALL_PREFIX} has no "
                      "CUDA or no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
endif()
message(STATUS "fp8nn: CUDA kernels ${FP8NN_CUDA_ENABLED} (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST})")

# fmt: libtorch ships its own fmt headers, which win over the system's in any target that links
# torch. Header-only fmt makes whichever headers are found self-consistent (nothing to link).
find_package(fmt CONFIG QUIET)
add_library(fp8nn_fmt INTERFACE)
target_compile_definitions(fp8nn_fmt INTERFACE FMT_HEADER_ONLY=1)
if(TARGET fmt::fmt-header-only)
  target_link_libraries(fp8nn_fmt INTERFACE fmt::fmt-header-only)
endif()

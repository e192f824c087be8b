# c10d, PyTorch's distributed engine (inside libtorch: TCPStore and ProcessGroupGloo in
# libtorch_cpu, ProcessGroupNCCL in libtorch_cuda), for code that creates process groups:
# examples/train_mlp and the tests. The fp8nn library needs only c10d::ProcessGroup, whose header
# includes nothing of Gloo or NCCL. libtorch's targets already define USE_DISTRIBUTED,
# USE_C10D_GLOO (and USE_C10D_NCCL for a CUDA build); what the PyPI wheel lacks are headers:
#  - Gloo's, included by ProcessGroupGloo.hpp: cmake/gloo_declarations stands in for them;
#  - nccl.h, included by ProcessGroupNCCL.hpp: the wheel's nvidia-nccl package has it.
add_library(fp8nn_c10d INTERFACE)
target_include_directories(fp8nn_c10d SYSTEM INTERFACE
  ${CMAKE_CURRENT_LIST_DIR}/gloo_declarations)
target_link_libraries(fp8nn_c10d INTERFACE ${TORCH_LIBRARIES})

set(FP8NN_C10D_NCCL OFF)
if(CAFFE2_USE_CUDA)
  find_path(FP8NN_NCCL_INCLUDE_DIR nccl.h
    HINTS ${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include ENV NCCL_INCLUDE_DIR
    PATH_SUFFIXES include)
  if(FP8NN_NCCL_INCLUDE_DIR)
    set(FP8NN_C10D_NCCL ON)
    target_include_directories(fp8nn_c10d SYSTEM INTERFACE ${FP8NN_NCCL_INCLUDE_DIR})
    target_compile_definitions(fp8nn_c10d INTERFACE FP8NN_C10D_NCCL=1)
  endif()
endif()
message(STATUS "fp8nn: c10d process groups: gloo, nccl ${FP8NN_C10D_NCCL}")

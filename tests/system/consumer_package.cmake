# ctest script: cmake --install into a fresh prefix, then configure, build and run the
# find_package(fp8nn) consumer in examples/consumer against that prefix alone.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer_package: ${what} failed (${rc})")
  endif()
endfunction()

run_step("install" ${CMAKE_COMMAND} --install "${FP8NN_BINARY_DIR}" --prefix "${prefix}")
foreach(f include/fp8nn/fp8nn.h lib/cmake/fp8nn/fp8nnConfig.cmake lib/cmake/fp8nn/fp8nnConfigVersion.cmake)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "consumer_package: ${f} was not installed")
  endif()
endforeach()
run_step("configure" ${CMAKE_COMMAND} -S "${FP8NN_SOURCE_DIR}/examples/consumer"
  -B "${WORK_DIR}/build" -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_PREFIX_PATH=${prefix}" "-DTorch_DIR=${Torch_DIR}"
  "-DTORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}")
run_step("build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("run" "${WORK_DIR}/build/fp8nn_consumer")

# ctest script: cmake --install into a fresh prefix, then configure, build and run the
# find_package(fp8nn 1.0) consumer in examples/consumer against that prefix alone (it checks that
# the library it runs with is the version CMake found), and check that the installed package
# refuses versions it is not compatible with.
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

# The package is 1.x (SameMajorVersion): a request for another major version, or for an exact
# version it is not, must fail at find_package, naming the installed config it considered.
foreach(request "2.0" "0.1 EXACT")
  string(REGEX REPLACE "[^A-Za-z0-9]+" "_" name "${request}")
  set(project_dir "${WORK_DIR}/refuse_${name}")
  file(WRITE "${project_dir}/CMakeLists.txt"
    "cmake_minimum_required(VERSION 3.25)\n"
    "project(fp8nn_refuse_${name} LANGUAGES NONE)\n"
    "find_package(fp8nn ${request} CONFIG REQUIRED)\n")
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${project_dir}" -B "${project_dir}/build"
      -G "${GENERATOR}" "-DCMAKE_PREFIX_PATH=${prefix}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(rc EQUAL 0)
    message(FATAL_ERROR "consumer_package: find_package(fp8nn ${request}) accepted the installed "
                        "package; expected it to be refused")
  endif()
  string(REGEX MATCH "^[0-9.]+" number "${request}")
  string(REGEX REPLACE "[ \t\r\n]+" " " one_line "${output}")  # CMake wraps its messages
  string(FIND "${one_line}" "requested version \"${number}\"" version_refused)
  string(FIND "${one_line}" "${prefix}/lib/cmake/fp8nn/fp8nnConfig.cmake, version: "
         installed_considered)
  if(version_refused EQUAL -1 OR installed_considered EQUAL -1)
    message(FATAL_ERROR "consumer_package: find_package(fp8nn ${request}) failed, but not by "
                        "refusing the installed version:\n${output}")
  endif()
  message(STATUS "consumer_package: find_package(fp8nn ${request}) refused, as expected")
endforeach()

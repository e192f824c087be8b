# cmake --install: headers, libfp8nn, and a package config exporting fp8nn::fp8nn that finds
# libtorch (and through it CUDA) on the consumer's side.
include(CMakePackageConfigHelpers)

set(FP8NN_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/fp8nn")

install(TARGETS fp8nn EXPORT fp8nnTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/fp8nn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT fp8nnTargets NAMESPACE fp8nn:: DESTINATION ${FP8NN_INSTALL_CMAKEDIR})

# The consumer needs the same libtorch the library was built against: remember where it was.
get_filename_component(FP8NN_TORCH_DIR_AT_BUILD "${Torch_DIR}" ABSOLUTE)
configure_package_config_file(cmake/fp8nnConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/fp8nnConfig.cmake"
  INSTALL_DESTINATION ${FP8NN_INSTALL_CMAKEDIR})
# Releases of one major version keep its API: find_package(fp8nn 1.0) accepts any 1.x from 1.0 on,
# never 0.x or 2.x.
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/fp8nnConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/fp8nnConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/fp8nnConfigVersion.cmake"
        DESTINATION ${FP8NN_INSTALL_CMAKEDIR})

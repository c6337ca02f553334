# `cmake --install` puts headers under include/lowbit/, the libraries, and a
# package config so that a project does find_package(lowbit) and links
# lowbit::lowbit (torch and OpenMP are found again as dependencies; OpenCL and
# nlohmann-json are private).
include(CMakePackageConfigHelpers)

set(installed_libraries lowbit lowbit_kernels)
set(header_dirs kernels quant io optim lora nn)
if(TARGET lowbit_text)
  list(APPEND installed_libraries lowbit_text)
  list(APPEND header_dirs text)
endif()
if(TARGET lowbit_dist)
  list(APPEND installed_libraries lowbit_dist)
  list(APPEND header_dirs dist)
endif()
install(TARGETS ${installed_libraries} EXPORT lowbitTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# Loaded at run time by lowbit_text, never linked: outside the export set.
if(TARGET lowbit_sentencepiece)
  install(TARGETS lowbit_sentencepiece LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

# Public headers only: backend internals (kernels/cpu, kernels/opencl,
# kernels/cuda) and the tokenizers' stages (text/hf, text/sentencepiece,
# text/unicode) stay out.
foreach(dir ${header_dirs})
  if(EXISTS "${PROJECT_SOURCE_DIR}/${dir}")
    install(DIRECTORY "${PROJECT_SOURCE_DIR}/${dir}/"
      DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/lowbit/${dir}"
      FILES_MATCHING PATTERN "*.h"
      PATTERN "cpu" EXCLUDE PATTERN "opencl" EXCLUDE PATTERN "cuda" EXCLUDE
      PATTERN "hf" EXCLUDE PATTERN "sentencepiece" EXCLUDE PATTERN "unicode" EXCLUDE)
  endif()
endforeach()

set(config_dir "${CMAKE_INSTALL_LIBDIR}/cmake/lowbit")
install(EXPORT lowbitTargets NAMESPACE lowbit:: DESTINATION "${config_dir}")
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/lowbitConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/lowbitConfig.cmake" INSTALL_DESTINATION "${config_dir}")
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/lowbitConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/lowbitConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/lowbitConfigVersion.cmake" DESTINATION "${config_dir}")

# Installs the build tree into a scratch prefix, configures tests/consumer
# against it with find_package(lowbit), builds and runs it.
file(REMOVE_RECURSE "${WORK_DIR}")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
# The build's own prefix path (torch's CMake config, for one) reaches the
# consumer through the environment: a ';' list would split run()'s arguments.
if(EXTRA_PREFIX_PATH)
  string(REPLACE "|" ":" extra_prefix_path "${EXTRA_PREFIX_PATH}")
  set(ENV{CMAKE_PREFIX_PATH} "${extra_prefix_path}")
endif()
# A consumer that uses neither OpenCL nor nlohmann-json must not need their
# development files: find_package of either fails here, so a config that
# asked for them would stop the configure.
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build" -G Ninja
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix"
    -DCMAKE_DISABLE_FIND_PACKAGE_OpenCL=TRUE -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=TRUE
    --no-warn-unused-cli)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")

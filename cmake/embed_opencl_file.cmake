# Script mode: writes OUTPUT (.cpp) holding PRELUDE + INPUT as one raw string.
file(READ "${PRELUDE}" prelude)
file(READ "${INPUT}" body)
set(delim "lowbit_cl")
string(FIND "${prelude}${body}" ")${delim}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )${delim}\"")
endif()
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by cmake/embed_opencl_file.cmake. Do not edit.\n"
  "const char* lowbit_cl_source_${NAME}() {\n"
  "  return R\"${delim}(${prelude}\n#line 1 \"${NAME}.cl\"\n${body})${delim}\";\n"
  "}\n")

# Script mode: writes OUTPUT (.cpp) holding the PRELUDES ('|'-separated) and
# INPUT as one raw string.
string(REPLACE "|" ";" preludes "${PRELUDES}")
set(text "")
foreach(prelude IN LISTS preludes)
  file(READ "${prelude}" part)
  string(APPEND text "${part}\n")
endforeach()
file(READ "${INPUT}" body)
set(delim "lowbit_cl")
string(FIND "${text}${body}" ")${delim}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} or a prelude contains the raw-string delimiter )${delim}\"")
endif()
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by cmake/embed_opencl_file.cmake. Do not edit.\n"
  "const char* lowbit_cl_source_${NAME}() {\n"
  "  return R\"${delim}(${text}#line 1 \"${NAME}.cl\"\n${body})${delim}\";\n"
  "}\n")

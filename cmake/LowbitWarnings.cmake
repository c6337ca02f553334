# lowbit_warnings(target): the project's warning set, applied to our own code only.
function(lowbit_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(LOWBIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

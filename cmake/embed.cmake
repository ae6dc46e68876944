# embed_files(TARGET OUTPUT SYMBOL FILE [SYMBOL FILE]...): writes OUTPUT, a C file that
# defines `const unsigned char SYMBOL[]` and `const size_t SYMBOL_len` for each FILE (with a
# terminating NUL that the length leaves out), regenerated whenever a FILE changes.
function(embed_files target output)
  _embed(${target} ${output} "" ${ARGN})
endfunction()

# embed_web_files(TARGET OUTPUT TABLE URLPATH FILE [URLPATH FILE]...): the same for files
# served over HTTP: OUTPUT also defines `const static_file_t TABLE[]` (daemon/static.h),
# one {URLPATH, content type, data, length, ETag} per FILE, and `TABLE_count`.
function(embed_web_files target output table)
  _embed(${target} ${output} ${table} ${ARGN})
endfunction()

function(_embed target output table)
  set(pairs ${ARGN})
  set(deps)
  list(LENGTH pairs count)
  math(EXPR last "${count} - 1")
  foreach(i RANGE 1 ${last} 2)
    list(GET pairs ${i} file)
    list(APPEND deps ${file})
  endforeach()
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${output} "-DPAIRS=${pairs}" "-DTABLE=${table}"
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${deps} ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${output}"
    VERBATIM)
  add_custom_target(${target} DEPENDS ${output})
endfunction()

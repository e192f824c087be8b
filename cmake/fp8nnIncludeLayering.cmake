# ctest include_layering (cmake -DFP8NN_SOURCE_DIR=<repo> -P this file): include arrows between
# operation families point one way. Families, lowest first:
#   common < quantize < gemm < linear < model
# A file in src/<family>/ (or kernels/<family>/) may include its own family and lower ones, never a
# higher one: "gemm/..." from src/quantize/ fails, any family but common from src/common/ fails.
# Includes read "<family>/..." (src/) or "kernels/<family>/..." (kernels/). kernels/ includes only
# kernels/ (no libtorch there). Every file lives in a family folder; a folder of src/ or kernels/
# that is not a family fails too, so that a new family gets its place in the order here first.

set(families common quantize gemm linear model)

if(NOT FP8NN_SOURCE_DIR)
  message(FATAL_ERROR "include_layering: pass -DFP8NN_SOURCE_DIR=<repository root>")
endif()

function(rank_of family out)
  list(FIND families "${family}" rank)
  set(${out} ${rank} PARENT_SCOPE)
endfunction()

set(violations "")
foreach(tree src kernels)
  file(GLOB_RECURSE sources RELATIVE ${FP8NN_SOURCE_DIR}
       ${FP8NN_SOURCE_DIR}/${tree}/*.h ${FP8NN_SOURCE_DIR}/${tree}/*.cpp
       ${FP8NN_SOURCE_DIR}/${tree}/*.cuh ${FP8NN_SOURCE_DIR}/${tree}/*.cu)
  foreach(source IN LISTS sources)
    # The family of the file: its first folder below src/ or kernels/.
    string(REGEX REPLACE "^${tree}/" "" inside "${source}")
    if(inside MATCHES "/")
      string(REGEX REPLACE "/.*" "" family "${inside}")
    else()
      list(APPEND violations "${source}: ${tree}/ files live in a family folder")
      continue()
    endif()
    rank_of("${family}" source_rank)
    if(source_rank EQUAL -1)
      list(APPEND violations "${source}: '${tree}/${family}/' is not a family (${families})")
      continue()
    endif()

    # One list element per line: characters that CMake lists treat specially are masked first.
    file(READ ${FP8NN_SOURCE_DIR}/${source} content)
    string(REPLACE "\\" "/" content "${content}")
    string(REPLACE ";" "," content "${content}")
    string(REPLACE "[" "(" content "${content}")
    string(REPLACE "]" ")" content "${content}")
    string(REPLACE "\n" ";" lines "${content}")
    set(line_number 0)
    foreach(line IN LISTS lines)
      math(EXPR line_number "${line_number} + 1")
      if(NOT line MATCHES "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\"")
        continue()
      endif()
      set(included "${CMAKE_MATCH_1}")
      set(target_tree src)
      set(path "${included}")
      if(included MATCHES "^kernels/(.*)")
        set(target_tree kernels)
        set(path "${CMAKE_MATCH_1}")
      endif()
      if(path MATCHES "^([^/]+)/")
        set(target_family "${CMAKE_MATCH_1}")
      else()
        continue()  # a file next to this one, or outside both trees
      endif()
      rank_of("${target_family}" target_rank)
      if(target_rank EQUAL -1)
        continue()  # not a family folder (e.g. a file's own sub-folder)
      endif()
      set(where "${source}:${line_number}: ${tree}/${family} includes \"${included}\"")
      if(tree STREQUAL "kernels" AND target_tree STREQUAL "src")
        list(APPEND violations "${where} (kernels/ includes only kernels/)")
      elseif(target_rank GREATER source_rank)
        list(APPEND violations "${where} (${target_family} is above ${family})")
      endif()
    endforeach()
  endforeach()
endforeach()

if(violations)
  list(JOIN violations "\n  " report)
  message(FATAL_ERROR "include_layering: include arrows pointing up:\n  ${report}")
endif()
message(STATUS "include_layering: every include points down or within its family")

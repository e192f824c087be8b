# ctest script: runs COMMAND (a ;-list) and passes when it exits non-zero with output matching
# EXPECT (a regex), i.e. a clear error message rather than a crash or a silent success.
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit code: ${rc}\n${out}${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "expected a non-zero exit code")
endif()
if(NOT rc MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the command crashed: ${rc}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "expected the output to match '${EXPECT}'")
endif()

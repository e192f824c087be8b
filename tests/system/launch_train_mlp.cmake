# ctest script: examples/train_mlp in 2 processes through scripts/launch (Gloo on the CPU, no
# stdin, no GPU). Rank 0 alone reports and writes the CSV and checkpoint; the checkpoint resumes
# with the same world size and is refused with another.
# -DTRAIN_MLP=<binary> -DLAUNCH=<scripts/launch> -DWORK_DIR=<scratch folder>
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(small --device cpu --linear global --sync-amax --batch 64 --features 16 --width 32 --depth 2
          --train-size 1024 --val-size 128 --log-every 2 --eval-every 2 --progress lines
          --out "${WORK_DIR}/out")

function(launch ranks)
  execute_process(
    COMMAND env FP8NN_LAUNCH_PROGRAM=${TRAIN_MLP} bash "${LAUNCH}" ${ranks} -- ${small} ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err INPUT_FILE /dev/null TIMEOUT 100)
  message("launch ${ranks} ${ARGN}: exit ${rc}\n${out}${err}")
  set(rc "${rc}" PARENT_SCOPE)
  set(output "${out}${err}" PARENT_SCOPE)
endfunction()

function(count_matches regex text result)
  string(REGEX MATCHALL "${regex}" found "${text}")
  list(LENGTH found n)
  set(${result} ${n} PARENT_SCOPE)
endfunction()

launch(2 --steps 4 --save "${WORK_DIR}/ck.pt")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "2 processes: expected exit 0")
endif()
count_matches("processes: 2 \\(gloo\\)" "${output}" n)
count_matches("step +4/4" "${output}" steps)
if(NOT n EQUAL 1 OR NOT steps EQUAL 1)
  message(FATAL_ERROR "expected rank 0 alone to report (header ${n}x, step 4/4 ${steps}x)")
endif()
if(NOT EXISTS "${WORK_DIR}/out/loss_global.csv" OR NOT EXISTS "${WORK_DIR}/ck.pt")
  message(FATAL_ERROR "expected loss_global.csv and ck.pt from rank 0")
endif()

launch(2 --steps 6 --resume "${WORK_DIR}/ck.pt")
count_matches("step +6/6" "${output}" steps)
if(NOT rc EQUAL 0 OR NOT steps EQUAL 1)
  message(FATAL_ERROR "resume with 2 processes: expected exit 0 and one step 6/6 line")
endif()

launch(1 --steps 6 --resume "${WORK_DIR}/ck.pt")
if(rc EQUAL 0 OR NOT output MATCHES "written by 2 process\\(es\\), this run has 1")
  message(FATAL_ERROR "resume with 1 process: expected the world-size error")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")

# The tests that call E left unfinished, on the final code: a build of those targets only.
export TORCH_CUDA_ARCH_LIST=9.0a
export FP8NN_BUILD_DIR=$PWD/build-gpu
source scripts/lib.sh
ensure_torch > $OUT/torch.txt 2>&1
( timeout 140 bash -c "source scripts/lib.sh; ensure_torch >/dev/null 2>&1; build_fp8nn test_device_memory test_quantize_cuda test_reliability test_quantize_with_transpose" > $OUT/build.txt 2>&1 ); echo "build rc=$?"
tail -2 $OUT/build.txt
T=build-gpu/tests
for t in test_device_memory test_quantize_cuda test_quantize_with_transpose test_reliability; do
  [ -x $T/$t ] || { echo "$t not built"; continue; }
  timeout 25 $T/$t > $OUT/$t.txt 2>&1; echo "$t rc=$?"; tail -2 $OUT/$t.txt
done

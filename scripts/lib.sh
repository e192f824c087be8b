# Shared by scripts/setup, scripts/test and scripts/run: finding or installing what fp8nn needs.
# Sourced, not run. Everything prints what it does on stderr-free stdout lines starting "[fp8nn]".

FP8NN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FP8NN_CACHE="${FP8NN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fp8nn}"
FP8NN_BUILD_DIR="${FP8NN_BUILD_DIR:-$FP8NN_ROOT/build}"
# The PyPI torch wheel whose libtorch we build against when the user has none: 2.11.0 is a
# CUDA 13.0 build on PyPI (checked below, not assumed).
FP8NN_TORCH_VERSION="${FP8NN_TORCH_VERSION:-2.11.0}"

log() { echo "[fp8nn] $*"; }
die() { echo "[fp8nn] error: $*" >&2; exit 1; }

# CUDA major version of the toolkit on PATH (or /usr/local/cuda), empty without one.
toolkit_cuda_major() {
  local nvcc
  nvcc="$(command -v nvcc || true)"
  [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
  [ -n "$nvcc" ] || return 0
  "$nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p' | head -n1
}

# Debian/Ubuntu packages for the build and the tests, installed only when their files are missing.
ensure_system_packages() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  command -v ninja >/dev/null || missing+=(ninja-build)
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  [ -e /usr/include/catch2/catch.hpp ] || [ -e /usr/include/catch2/catch_test_macros.hpp ] ||
    [ -e /usr/local/include/catch2/catch_test_macros.hpp ] || missing+=(catch2)
  [ -e /usr/include/fmt/format.h ] || [ -e /usr/local/include/fmt/format.h ] || missing+=(libfmt-dev)
  [ -e /usr/include/cxxopts.hpp ] || [ -e /usr/local/include/cxxopts.hpp ] || missing+=(libcxxopts-dev)
  if [ ${#missing[@]} -eq 0 ]; then
    log "system packages: present"
    return 0
  fi
  apt_install "${missing[@]}"
}

apt_install() {
  local missing=("$@") sudo=""
  log "system packages: installing ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    die "apt-get update failed"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" </dev/null || die "apt-get install ${missing[*]} failed"
}

# Prints the directory holding TorchConfig.cmake of a python's torch, if it has one whose CUDA
# major matches the toolkit's (or that is a CPU build when there is no toolkit).
torch_cmake_dir_of() {
  local python="$1" want_cuda="$2"
  "$python" - "$want_cuda" 2>/dev/null <<'PY'
import os, sys
try:
    import torch, torch.utils
except Exception:
    sys.exit(1)
want = sys.argv[1]
have = (torch.version.cuda or "").split(".")[0]
if want and have != want:
    sys.stderr.write(f"torch {torch.__version__} is built for CUDA {have or 'none'}, not {want}\n")
    sys.exit(2)
print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))
PY
}

# Sets TORCH_DIR to libtorch's cmake dir: the user's Torch_DIR, a TorchConfig on CMAKE_PREFIX_PATH,
# an importable torch of a matching CUDA build, or else the cached PyPI wheel (installed once).
ensure_torch() {
  local cuda_major dir p
  cuda_major="$(toolkit_cuda_major)"
  if [ -n "${Torch_DIR:-}" ] && [ -e "$Torch_DIR/TorchConfig.cmake" ]; then
    TORCH_DIR="$Torch_DIR"; log "libtorch: Torch_DIR=$TORCH_DIR"; return 0
  fi
  local IFS_old="$IFS"; IFS=":;"
  for p in ${CMAKE_PREFIX_PATH:-}; do
    for dir in "$p" "$p/share/cmake/Torch" "$p/Torch"; do
      if [ -e "$dir/TorchConfig.cmake" ]; then
        IFS="$IFS_old"; TORCH_DIR="$dir"; log "libtorch: from CMAKE_PREFIX_PATH: $TORCH_DIR"; return 0
      fi
    done
  done
  IFS="$IFS_old"
  for p in "${FP8NN_PYTHON:-}" python3; do
    [ -n "$p" ] && command -v "$p" >/dev/null || continue
    if dir="$(torch_cmake_dir_of "$p" "$cuda_major")" && [ -n "$dir" ]; then
      TORCH_DIR="$dir"; log "libtorch: from $p's torch: $TORCH_DIR"; return 0
    fi
  done
  local venv="$FP8NN_CACHE/torch-$FP8NN_TORCH_VERSION-cu${cuda_major:-cpu}"
  if [ -x "$venv/bin/python" ] && dir="$(torch_cmake_dir_of "$venv/bin/python" "$cuda_major")"; then
    TORCH_DIR="$dir"; log "libtorch: cached wheel $venv"; return 0
  fi
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  log "libtorch: installing torch==$FP8NN_TORCH_VERSION from PyPI into $venv (once; ~5 GB)"
  rm -rf "$venv"
  mkdir -p "$FP8NN_CACHE"
  python3 -m venv "$venv" || die "python3 -m venv failed (install python3-venv)"
  local index=()
  [ -z "$cuda_major" ] && index=(--index-url https://download.pytorch.org/whl/cpu)
  "$venv/bin/python" -m pip install --progress-bar off --disable-pip-version-check \
    "${index[@]}" "torch==$FP8NN_TORCH_VERSION" || die "pip install torch==$FP8NN_TORCH_VERSION failed"
  if ! dir="$(torch_cmake_dir_of "$venv/bin/python" "$cuda_major")"; then
    die "the installed torch does not match the CUDA $cuda_major toolkit; set Torch_DIR to a libtorch that does"
  fi
  TORCH_DIR="$dir"
  log "libtorch: $TORCH_DIR"
}

# Configures and builds fp8nn in FP8NN_BUILD_DIR with the libtorch found by ensure_torch: the
# targets given (e.g. train_mlp, which builds the library it needs), or everything.
build_fp8nn() {
  local targets=()
  [ $# -gt 0 ] && targets=(--target "$@")
  local generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  [ -e "$FP8NN_BUILD_DIR/CMakeCache.txt" ] && generator=()
  log "configure: $FP8NN_BUILD_DIR"
  cmake -S "$FP8NN_ROOT" -B "$FP8NN_BUILD_DIR" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" -DTorch_DIR="$TORCH_DIR" \
    ${FP8NN_CMAKE_ARGS:-} || die "cmake configure failed"
  log "build ${*:-everything} (${FP8NN_JOBS:-$(nproc)} jobs)"
  cmake --build "$FP8NN_BUILD_DIR" --parallel "${FP8NN_JOBS:-$(nproc)}" "${targets[@]}" \
    || die "build failed"
}

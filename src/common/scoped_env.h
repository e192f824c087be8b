#pragma once
// An environment variable set for a scope and put back as it was, set or not, when the scope
// ends (a null value leaves it alone): for tests and benchmarks that switch fp8nn's environment
// settings (FP8NN_GROUP_GEMM, FP8NN_TILE_LOAD) within one process. Not thread-safe (it writes the
// environment).

#include <cstdlib>
#include <string>

namespace fp8nn {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name), active_(value != nullptr) {
    if (!active_) return;
    const char* saved = std::getenv(name);
    had_previous_ = saved != nullptr;
    if (had_previous_) previous_ = saved;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (!active_) return;
    if (had_previous_) {
      setenv(name_.c_str(), previous_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  bool active_;
  bool had_previous_ = false;
  std::string previous_;
};

}  // namespace fp8nn

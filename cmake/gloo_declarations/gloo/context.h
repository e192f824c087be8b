#pragma once
// Stand-in for Gloo's gloo/context.h (see README.md in this folder). ProcessGroupGloo holds
// contexts behind shared_ptr and calls setTimeout in an inline member; declared, never defined
// here.

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo

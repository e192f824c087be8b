#pragma once
// Stand-in for Gloo's gloo/rendezvous/store.h (see ../README.md): the abstract store that
// ProcessGroupGloo::GlooStore overrides (set, get, wait). GLOO_STORE_HAS_STORE_V2 stays undefined,
// so GlooStore's optional overrides are left out; fp8nn code never instantiates GlooStore.

#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys,
                    const std::chrono::milliseconds& timeout) = 0;
};

}  // namespace rendezvous
}  // namespace gloo

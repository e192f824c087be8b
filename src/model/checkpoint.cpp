// save_checkpoint / load_checkpoint: torch's module archive plus one checksum per parameter and
// buffer, verified before load_checkpoint returns; on any failure the module gets its old values
// back, so a damaged file changes nothing.

#include <fp8nn/checkpoint.h>

#include <c10/util/Exception.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace fp8nn {
namespace {

// A key torch's module archive never uses (parameter and module names cannot contain dots).
constexpr const char* kChecksumKey = "fp8nn.checksums";

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Every parameter and buffer by its dotted path, in the module's registration order.
NamedTensors state_of(const torch::nn::Module& module) {
  NamedTensors state;
  for (const auto& p : module.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) state.emplace_back("buffer " + b.key(), b.value());
  return state;
}

// FNV-1a (64-bit) over a tensor's name, dtype, sizes and bytes.
int64_t checksum_of(const std::string& name, const torch::Tensor& tensor) {
  uint64_t hash = 14695981039346656037ull;
  const auto mix = [&hash](const void* data, size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < bytes; ++i) {
      hash ^= p[i];
      hash *= 1099511628211ull;
    }
  };
  mix(name.data(), name.size());
  if (tensor.defined()) {
    const auto dtype = static_cast<int32_t>(tensor.scalar_type());
    mix(&dtype, sizeof(dtype));
    for (const int64_t size : tensor.sizes()) mix(&size, sizeof(size));
    const auto bytes = tensor.detach().cpu().contiguous();
    mix(bytes.data_ptr(), bytes.nbytes());
  }
  return static_cast<int64_t>(hash);
}

torch::Tensor checksums_of(const torch::nn::Module& module) {
  const auto state = state_of(module);
  auto sums = torch::empty({static_cast<int64_t>(state.size())}, torch::kLong);
  auto values = sums.accessor<int64_t, 1>();
  for (size_t i = 0; i < state.size(); ++i) {
    values[static_cast<int64_t>(i)] = checksum_of(state[i].first, state[i].second);
  }
  return sums;
}

std::string message_of(const std::exception& e) {
  if (const auto* error = dynamic_cast<const c10::Error*>(&e))
    return error->what_without_backtrace();
  return e.what();
}

}  // namespace

void save_checkpoint(const torch::nn::Module& module, const std::string& path) {
  try {
    torch::serialize::OutputArchive archive;
    module.save(archive);
    archive.write(kChecksumKey, checksums_of(module), /*is_buffer=*/true);
    archive.save_to(path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "fp8nn::save_checkpoint: cannot write '", path, "': ", message_of(e));
  }
}

void load_checkpoint(torch::nn::Module& module, const std::string& path) {
  const auto state = state_of(module);
  std::vector<torch::Tensor> previous;  // copies, put back if anything goes wrong
  c10::optional<torch::Device> device;
  for (const auto& [name, tensor] : state) {
    previous.push_back(tensor.defined() ? tensor.detach().clone() : torch::Tensor());
    if (tensor.defined() && !device) device = tensor.device();
  }
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path, device);
    module.load(archive);
    for (size_t i = 0; i < state.size(); ++i) {  // torch::load adopts any shape it finds
      const auto& [name, tensor] = state[i];
      if (!previous[i].defined()) continue;
      TORCH_CHECK_VALUE(tensor.sizes() == previous[i].sizes(), "expected ", name, " of shape ",
                        previous[i].sizes(), ", got ", tensor.sizes(),
                        " (a checkpoint of another module?)");
    }
    torch::Tensor stored;
    archive.read(kChecksumKey, stored, /*is_buffer=*/true);
    const auto expected = checksums_of(module);
    TORCH_CHECK(stored.scalar_type() == torch::kLong && stored.sizes() == expected.sizes() &&
                    torch::equal(stored.cpu(), expected),
                "the checksums of its ", expected.numel(),
                " parameters and buffers do not match: the file is corrupted or belongs to "
                "another module");
  } catch (const std::exception& e) {
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < state.size(); ++i) {
        if (previous[i].defined()) state[i].second.set_data(previous[i]);
      }
    }
    TORCH_CHECK(false, "fp8nn::load_checkpoint: cannot load '", path, "': ", message_of(e));
  }
}

}  // namespace fp8nn

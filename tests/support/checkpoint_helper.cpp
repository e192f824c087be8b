// The second process of test_faults' checkpoint tests: builds a freshly (differently) initialised
// layer, loads a checkpoint into it, and compares its output on saved inputs with the saved
// output, bit for bit.
//
//   fp8nn_checkpoint_helper checked|torch global|mixed IN OUT CHECKPOINT DATA
// checked: fp8nn::load_checkpoint; torch: torch::load. DATA holds {x, y} (torch::save).
// Exit status: 0 identical, 3 different, 2 a c10::Error (its message on stdout), 4 other errors.

#include <fp8nn/fp8nn.h>

#include <torch/torch.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace {

template <typename Layer>
int check(const std::string& mode, int64_t in, int64_t out, const std::string& checkpoint,
          const std::string& data) {
  std::vector<torch::Tensor> tensors;
  torch::load(tensors, data);
  const auto& x = tensors.at(0);
  const auto& y = tensors.at(1);
  torch::manual_seed(12345);  // not the saving process's initialisation
  Layer layer(fp8nn::LinearFP8Options(in, out).group_size_in(16));
  layer->to(x.device());
  if (mode == "checked") {
    fp8nn::load_checkpoint(*layer, checkpoint);
  } else {
    torch::load(layer, checkpoint);
  }
  const auto got = layer(x).detach();
  const bool identical = got.sizes() == y.sizes() && got.scalar_type() == y.scalar_type() &&
                         torch::equal(got.cpu().view(torch::kUInt8), y.cpu().view(torch::kUInt8));
  std::cout << (identical ? "identical" : "different") << std::endl;
  return identical ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::cerr << "usage: " << argv[0] << " checked|torch global|mixed IN OUT CHECKPOINT DATA\n";
    return 64;
  }
  const std::string mode = argv[1], recipe = argv[2];
  const int64_t in = std::atoll(argv[3]), out = std::atoll(argv[4]);
  try {
    if (recipe == "global") return check<fp8nn::LinearFP8Global>(mode, in, out, argv[5], argv[6]);
    return check<fp8nn::LinearFP8Mixed>(mode, in, out, argv[5], argv[6]);
  } catch (const c10::Error& e) {
    std::cout << "error: " << e.what_without_backtrace() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cout << "other error: " << e.what() << std::endl;
    return 4;
  }
}

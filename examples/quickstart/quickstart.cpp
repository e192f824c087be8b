// Quantizes a random activation-like tensor to E4M3 and E5M2, per tensor and per group, on the
// CPU (and the GPU when there is one), and prints the round-trip error of each: the smallest real
// run of the library until examples/train_mlp exists.

#include <fp8nn/fp8nn.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <vector>

namespace F = fp8nn::functional;

int main() {
  torch::manual_seed(0);
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  fmt::print("fp8nn {} (CUDA kernels built: {})\n", fp8nn::version(),
             fp8nn::built_with_cuda() ? "yes" : "no");
  fmt::print("{:<6} {:<6} {:>6} {:>14} {:>14}\n", "device", "format", "group", "rel.err mean",
             "rel.err max");
  // 4 rows of very different magnitude: per-row (per-group) scales keep the small rows accurate.
  const auto x = torch::randn({4, 1024}) * torch::tensor({1e-3, 1.0, 1e2, 1e4}).unsqueeze(1);
  for (const auto& device : devices) {
    const auto input = x.to(device).to(torch::kBFloat16);
    const auto reference = input.to(torch::kFloat);
    for (auto format : {fp8nn::Format::E4M3, fp8nn::Format::E5M2}) {
      for (int64_t group : {0, 128}) {
        const auto q = group == 0 ? F::quantize(input, format)
                                  : F::quantize_per_group(input, format, group);
        const auto relative = (F::dequantize(q) - reference).abs() / reference.abs().clamp_min(1e-30);
        fmt::print("{:<6} {:<6} {:>6} {:>14.3e} {:>14.3e}\n", device.str(), fp8nn::name_of(format),
                   group == 0 ? std::string("tensor") : std::to_string(group),
                   relative.mean().item<double>(), relative.max().item<double>());
      }
    }
  }
  return 0;
}

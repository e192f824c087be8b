// Links against an installed fp8nn and runs one quantize/dequantize round trip; exits non-zero if
// the library it runs with is not the version find_package found, or if the result is not within
// E4M3's half step.

#include <fp8nn/fp8nn.h>
#include <torch/torch.h>

#include <iostream>
#include <string>

int main() {
  const std::string parts = std::to_string(fp8nn::version_major()) + "." +
                            std::to_string(fp8nn::version_minor()) + "." +
                            std::to_string(fp8nn::version_patch());
  if (std::string(fp8nn::version()) != FP8NN_FOUND_VERSION || parts != FP8NN_FOUND_VERSION) {
    std::cerr << "fp8nn consumer: find_package found fp8nn " << FP8NN_FOUND_VERSION
              << ", the library says version() " << fp8nn::version() << " and " << parts << "\n";
    return 1;
  }

  const auto x = torch::randn({64, 256});
  const auto q = fp8nn::functional::quantize(x, fp8nn::Format::E4M3);
  const auto back = fp8nn::functional::dequantize(q);
  const double worst = ((back - x).abs() / x.abs().clamp_min(1e-6)).max().item<double>();
  std::cout << "fp8nn " << fp8nn::version() << " consumer: e4m3 round trip, worst relative error "
            << worst << "\n";
  // E4M3 relative half step is 2^-4; values that fall below E4M3's normal range may exceed it,
  // so check the bulk through the median.
  const double median = ((back - x).abs() / x.abs().clamp_min(1e-6)).median().item<double>();
  return median <= 0.0625 ? 0 : 1;
}

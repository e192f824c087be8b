// The module side of both FP8 layers, as a torch::nn::Linear user expects it: options,
// parameters and their initialisation, printing, clone(), ->to(dtype), torch::save/load, and
// from(torch::nn::Linear) sharing the parameter tensors.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace {

std::string printed(const torch::nn::Module& module) {
  std::ostringstream stream;
  stream << module;
  return stream.str();
}

// A file name unique to this process and test, removed on destruction.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& tag)
      : path(std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/fp8nn_" + tag +
             "_" + std::to_string(fp8nn::test::fresh_seed()) + ".pt") {}
  ~TempFile() { std::remove(path.c_str()); }
};

template <typename Layer>
void check_parameters_like_linear() {
  Layer layer(fp8nn::LinearFP8Options(1024, 4096));
  CHECK(layer->options.in_features() == 1024);
  CHECK(layer->options.out_features() == 4096);
  CHECK(layer->options.bias());
  const auto names = layer->named_parameters().keys();
  CHECK(names == std::vector<std::string>{"weight", "bias"});
  CHECK(layer->weight.sizes() == torch::IntArrayRef({4096, 1024}));
  CHECK(layer->bias.sizes() == torch::IntArrayRef({4096}));
  CHECK(layer->weight.scalar_type() == torch::kFloat);
  CHECK(layer->weight.requires_grad());
  CHECK(layer->buffers().empty());  // FP8 copies are working data, never state
  // kaiming_uniform_(a = sqrt(5)) is uniform in +-1/sqrt(in); so is the bias.
  const double bound = 1.0 / std::sqrt(1024.0);
  CHECK(layer->weight.abs().max().template item<double>() <= bound);
  CHECK(layer->weight.abs().max().template item<double>() > 0.99 * bound);
  CHECK(std::abs(layer->weight.std().template item<double>() - bound / std::sqrt(3.0)) <
        0.01 * bound);
  CHECK(layer->bias.abs().max().template item<double>() <= bound);
  Layer no_bias(fp8nn::LinearFP8Options(8, 4).bias(false));
  CHECK_FALSE(no_bias->bias.defined());
  CHECK(no_bias->named_parameters().keys() == std::vector<std::string>{"weight"});
  // reset_parameters() draws new values in place.
  const auto old = layer->weight.detach().clone();
  layer->reset_parameters();
  CHECK_FALSE(torch::equal(old, layer->weight));
}

template <typename Layer>
void check_clone_and_dtype() {
  Layer layer(24, 16);
  const auto x = torch::randn({5, 24});
  const auto copy = std::dynamic_pointer_cast<typename Layer::Impl>(layer->clone());
  REQUIRE(copy);
  CHECK(torch::equal(copy->weight, layer->weight));
  CHECK_FALSE(copy->weight.is_same(layer->weight));
  CHECK(copy->weight.data_ptr() != layer->weight.data_ptr());
  CHECK(torch::equal(copy->forward(x), layer(x)));
  {
    torch::NoGradGuard no_grad;
    copy->weight.mul_(2);  // a deep copy: the original does not see this
  }
  CHECK_FALSE(torch::equal(copy->weight, layer->weight));
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    CAPTURE(dtype);
    layer->to(dtype);
    CHECK(layer->weight.scalar_type() == dtype);
    CHECK(layer->bias.scalar_type() == dtype);
    const auto y = layer(x);  // fp32 input, low-precision parameters: output in x's dtype
    CHECK(y.scalar_type() == torch::kFloat);
    const auto y_low = layer(x.to(dtype));
    CHECK(y_low.scalar_type() == dtype);
    y.sum().backward();
    CHECK(layer->weight.grad().scalar_type() == dtype);
    layer->zero_grad();
  }
}

template <typename Layer>
void check_save_load(const std::string& tag) {
  Layer layer(fp8nn::LinearFP8Options(40, 24).group_size_in(16));
  TempFile file(tag);
  torch::save(layer, file.path);
  Layer loaded(fp8nn::LinearFP8Options(40, 24).group_size_in(16));
  CHECK_FALSE(torch::equal(loaded->weight, layer->weight));
  torch::load(loaded, file.path);
  const auto x = torch::randn({3, 7, 40});
  CHECK(fp8nn::test::count_bit_differences(loaded(x), layer(x)) == 0);
  CHECK(fp8nn::test::count_bit_differences(loaded->bias, layer->bias) == 0);
}

template <typename Layer>
void check_from_linear() {
  torch::nn::Linear linear(32, 16);
  auto layer = Layer::from(linear);
  CHECK(layer->weight.is_same(linear->weight));
  CHECK(layer->bias.is_same(linear->bias));
  CHECK(layer->options.in_features() == 32);
  CHECK(layer->options.out_features() == 16);
  // Same tensors: an optimizer step through the FP8 layer is seen by the Linear.
  torch::optim::SGD sgd(layer->parameters(), torch::optim::SGDOptions(0.1));
  layer(torch::randn({4, 32})).sum().backward();
  sgd.step();
  CHECK(linear->weight.grad().defined());
  CHECK(torch::equal(linear->weight, layer->weight));
  // Without bias, frozen parameters stay frozen; options must agree with the Linear.
  torch::nn::Linear frozen(torch::nn::LinearOptions(8, 4).bias(false));
  frozen->weight.requires_grad_(false);
  auto layer2 = Layer::from(frozen, fp8nn::LinearFP8Options(8, 4).bias(false).check_finite(true));
  CHECK_FALSE(layer2->bias.defined());
  CHECK_FALSE(layer2->weight.requires_grad());
  CHECK(layer2->options.check_finite());
  CHECK_THROWS_AS(Layer::from(frozen, fp8nn::LinearFP8Options(8, 4)), c10::ValueError);
}

// README.md's example of a custom module holding an FP8 layer as a member.
struct NetImpl : torch::nn::Module {
  fp8nn::LinearFP8Mixed fc{nullptr};  // was: torch::nn::Linear fc{nullptr};
  NetImpl() { fc = register_module("fc", fp8nn::LinearFP8Mixed(1024, 4096)); }
  torch::Tensor forward(torch::Tensor x) { return fc(x); }
};
TORCH_MODULE(Net);

}  // namespace

TEST_CASE("README's custom module with a member FP8 layer works and registers its parameters") {
  Net net;
  CHECK(net->named_parameters().keys() == std::vector<std::string>{"fc.weight", "fc.bias"});
  const auto x = torch::randn({2, 1024}).requires_grad_();
  net->forward(x).sum().backward();
  CHECK(net->fc->weight.grad().defined());
  CHECK(x.grad().sizes() == x.sizes());
}

TEST_CASE("parameters, options and initialisation are those of torch::nn::Linear") {
  fp8nn::test::seed_torch();
  check_parameters_like_linear<fp8nn::LinearFP8Global>();
  check_parameters_like_linear<fp8nn::LinearFP8Mixed>();
}

TEST_CASE("modules print like libtorch's") {
  CHECK(printed(*fp8nn::LinearFP8Global(fp8nn::LinearFP8Options(1024, 4096).bias(true))) ==
        "fp8nn::LinearFP8Global(in_features=1024, out_features=4096, bias=true)");
  CHECK(printed(*fp8nn::LinearFP8Global(fp8nn::LinearFP8Options(3, 5).bias(false))) ==
        "fp8nn::LinearFP8Global(in_features=3, out_features=5, bias=false)");
  CHECK(printed(*fp8nn::LinearFP8Mixed(fp8nn::LinearFP8Options(1024, 4096))) ==
        "fp8nn::LinearFP8Mixed(in_features=1024, out_features=4096, bias=true, "
        "group_size_in=1024, group_size_out=4096)");
  CHECK(printed(*fp8nn::LinearFP8Mixed(
            fp8nn::LinearFP8Options(1024, 4096).group_size_in(128).group_size_out(128))) ==
        "fp8nn::LinearFP8Mixed(in_features=1024, out_features=4096, bias=true, "
        "group_size_in=128, group_size_out=128)");
}

TEST_CASE("clone() deep copies; ->to(dtype) moves parameters, outputs keep x's dtype") {
  fp8nn::test::seed_torch();
  check_clone_and_dtype<fp8nn::LinearFP8Global>();
  check_clone_and_dtype<fp8nn::LinearFP8Mixed>();
}

TEST_CASE("torch::save / torch::load round trip gives bit-identical outputs") {
  fp8nn::test::seed_torch();
  check_save_load<fp8nn::LinearFP8Global>("global");
  check_save_load<fp8nn::LinearFP8Mixed>("mixed");
}

TEST_CASE("from(torch::nn::Linear) shares the weight and bias tensors") {
  fp8nn::test::seed_torch();
  check_from_linear<fp8nn::LinearFP8Global>();
  check_from_linear<fp8nn::LinearFP8Mixed>();
}

TEST_CASE("a module moved to CUDA computes what it computes on the CPU") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  fp8nn::LinearFP8Global global(64, 32);
  const auto x = torch::randn({4, 64});
  const auto cpu = global(x);
  const auto gpu_copy = std::dynamic_pointer_cast<fp8nn::LinearFP8GlobalImpl>(
      global->clone(torch::Device(torch::kCUDA)));
  REQUIRE(gpu_copy);
  CHECK(gpu_copy->weight.is_cuda());
  // Same FP8 operands; only the accumulation differs (tensor cores, fast accumulation in
  // forward: 2^-10 of the sum of |terms| for K = 64, see support/tolerance.h), so bound the
  // difference by 2^-9 of |x| |W|^T + |b| (the quantized terms are within 2^-4 of those).
  const auto magnitude = x.abs().matmul(global->weight.abs().t()) + global->bias.abs();
  const auto difference = (gpu_copy->forward(x.cuda()).cpu() - cpu).abs();
  CHECK((difference <= magnitude * 0x1p-9).all().item<bool>());
  // Input left on the CPU: a clear error, nothing computed.
  CHECK_THROWS_AS(gpu_copy->forward(x), c10::Error);
}

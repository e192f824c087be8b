// fp8nn_bench: GPU benchmarks of fp8nn's kernels against the device's own copy bandwidth.
//   fp8nn_bench [all|quantize|gemm|layer|host] [--samples N] [--batch N] [--warmup N]

#include <fp8nn/scaled_mm.h>
#include <cxxopts.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench.h"
#include "bench_gemm.h"
#include "bench_host.h"
#include "bench_layer.h"

int main(int argc, char** argv) {
  using fp8nn::bench::Options;
  // Subcommands by name; a new benchmark file adds its entry here.
  const std::map<std::string, std::function<void(const Options&)>> commands = {
      {"quantize", fp8nn::bench::run_quantize},
      {"gemm",
       [](const Options& o) {
         fp8nn::bench::GemmBenchOptions gemm;
         gemm.shapes = o.shapes;
         gemm.warmup = std::max(o.warmup, 10);
         gemm.iters = std::max(o.samples, 50);
         fp8nn::bench::run_gemm_bench(gemm);
       }},
      {"host",
       [](const Options& o) {
         fp8nn::bench::run_host_bench(
             o.shapes.empty() ? std::vector<std::array<int64_t, 3>>{{1024, 1024, 1024},
                                                                    {2048, 2048, 2048}}
                              : o.shapes,
             std::max(o.samples, 200));
       }},
      {"layer",
       [](const Options& o) {
         fp8nn::bench::run_layer_bench(o.shapes.empty() ? fp8nn::bench::kLayerShapes : o.shapes,
                                       o.samples_given ? o.samples : std::max(o.samples, 30));
       }},
  };

  cxxopts::Options cli("fp8nn_bench", "fp8nn GPU benchmarks (median of CUDA-event timings)");
  Options options;
  cli.add_options()("command", "all (default) or one of: quantize, gemm, layer, host",
                    cxxopts::value<std::string>()->default_value("all"))(
      "samples", "timed samples (median reported)",
      cxxopts::value<int>()->default_value(std::to_string(options.samples)))(
      "batch", "launches per timed sample",
      cxxopts::value<int>()->default_value(std::to_string(options.batch)))(
      "warmup", "untimed samples first",
      cxxopts::value<int>()->default_value(std::to_string(options.warmup)))(
      "shape",
      "gemm/layer: only these shapes, M,K,N[:M,K,N...], e.g. --shape 8192,4096,4096; quantize: "
      "their x [M, K] and W [N, K]",
      cxxopts::value<std::string>())(
      "autotune",
      "fp8nn's GEMMs time cuBLASLt's candidate algorithms once per problem and keep the fastest "
      "(fp8nn::functional::set_gemm_autotuning). The peers (at::_scaled_mm, at::matmul) always "
      "take cuBLAS's heuristic, so the default (off: heuristic's first choice for everyone) "
      "compares like with like; --autotune is a separate run",
      cxxopts::value<bool>()->default_value("false"))("h,help", "this help");
  cli.parse_positional({"command"});
  try {
    const auto args = cli.parse(argc, argv);
    if (args.count("help")) {
      std::cout << cli.help() << std::endl;
      return 0;
    }
    options.samples = std::max(1, args["samples"].as<int>());
    options.batch = std::max(1, args["batch"].as<int>());
    options.warmup = std::max(0, args["warmup"].as<int>());
    fp8nn::functional::set_gemm_autotuning(args["autotune"].as<bool>());
    options.samples_given = args.count("samples") > 0;
    if (args.count("shape")) {
      std::stringstream list(args["shape"].as<std::string>());
      std::string text;
      while (std::getline(list, text, ':')) {
        std::array<int64_t, 3> mkn{};
        char tail = 0;
        if (std::sscanf(text.c_str(), "%ld,%ld,%ld%c", &mkn[0], &mkn[1], &mkn[2], &tail) != 3 ||
            mkn[0] <= 0 || mkn[1] <= 0 || mkn[2] <= 0) {
          std::cerr << "fp8nn_bench: --shape expects M,K,N[:M,K,N...] (positive integers), got '"
                    << text << "'\n";
          return 2;
        }
        options.shapes.push_back(mkn);
      }
    }
    const auto command = args["command"].as<std::string>();
    if (command == "all") {
      for (const auto& [name, run] : commands) run(options);
    } else if (const auto it = commands.find(command); it != commands.end()) {
      it->second(options);
    } else {
      std::cerr << "fp8nn_bench: unknown command '" << command << "'\n" << cli.help() << std::endl;
      return 2;
    }
  } catch (const std::exception& e) {
    std::cerr << "fp8nn_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}

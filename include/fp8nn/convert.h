#pragma once
// Swapping torch::nn::Linear layers of an existing model for FP8 ones.
//
//   auto fp8_model = fp8nn::convert(model, fp8nn::Recipe::Mixed);
//   auto custom = fp8nn::convert(model, my_recipe);  // any fp8nn::Recipe
//
// C++ cannot rebind a module's member fields, so only containers are converted: Sequential and
// ModuleList, recursively (libtorch nests them through ModuleList: a Sequential cannot hold a
// Sequential). A custom module holding `torch::nn::Linear fc` declares it as
// `fp8nn::LinearFP8Global fc` instead (see README.md, "Layers").

#include <fp8nn/linear.h>
#include <fp8nn/recipe.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <string>

namespace fp8nn {

/// Decides whether the Linear at `path` (its name inside the converted container, as
/// named_modules() spells it, e.g. "2.0") is replaced.
using ConvertFilter = std::function<bool(const std::string& path, const torch::nn::LinearImpl&)>;

/// The default filter: in_features and out_features both multiples of 16 (the FP8 GEMMs' fast
/// path); other layers stay high precision.
bool features_multiple_of_16(const std::string& path, const torch::nn::LinearImpl& linear);

/// A new Sequential with the same names and order, in which every torch::nn::Linear that `filter`
/// accepts is an FP8 layer of `recipe` sharing the Linear's weight and bias tensors:
/// LinearFP8Global for Recipe::global(), LinearFP8Mixed for Recipe::mixed(G_in, G_out), LinearFP8
/// for any other recipe (refused first, c10::ValueError, when check_recipe refuses it). Other modules
/// are shared with `model`, not copied; custom modules (including subclasses of Sequential) are
/// kept as they are.
torch::nn::Sequential convert(const torch::nn::Sequential& model, const Recipe& recipe,
                              const ConvertFilter& filter = features_multiple_of_16);

/// The same for a ModuleList, recursing into Sequential and ModuleList children.
torch::nn::ModuleList convert(const torch::nn::ModuleList& model, const Recipe& recipe,
                              const ConvertFilter& filter = features_multiple_of_16);

}  // namespace fp8nn

#pragma once
// What FP8 does to a layer's numbers: a monitor that the quantize kernels fill as they cast.
//
//   fp8nn::enable_numerics(*model);                     // every FP8 layer of the model
//   ... train ...
//   for (const auto& row : fp8nn::numerics_table(*model)) std::cout << row << '\n';
//
// Per layer and per quantized tensor (x, the weight, the output gradient), the figures of its
// latest quantization: amax, the scale (smallest and largest over the groups), how many elements
// the cast saturated and how many it flushed to zero; and, every error_every forward calls, the
// relative error of each FP8 product against the same product in high precision.
//
// The kernels count on the device in the pass they make anyway (nothing is added when the monitor
// is off); nothing synchronises with the host until the figures are read, and the updates are
// ordinary kernels on the current stream, so they run under CUDA-graph replay too.

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace fp8nn {

/// The quantized tensors of a linear layer.
enum class Operand { Input = 0, Weight = 1, GradOutput = 2 };
/// "x", "weight", "grad_output".
const char* name_of(Operand operand);

/// The three products of a linear layer.
enum class Product { Forward = 0, GradInput = 1, GradWeight = 2 };
/// "forward", "grad_input", "grad_weight".
const char* name_of(Product product);

struct NumericsOptions {
  /// Every this many forward calls (with autograd recording) of a layer, also measure the
  /// relative error ||P_fp8 - P_high|| / ||P_high|| (Frobenius norms, fp32) of each FP8 product
  /// of that step against the product of the unquantized operands; 0: never. Costs one
  /// high-precision product per FP8 product on those steps.
  TORCH_ARG(int64_t, error_every) = 0;
};

/// The figures of one quantization (docs/design.md, "Numerics monitor", defines each).
struct OperandNumerics {
  int64_t numel = 0;      ///< elements cast; 0: not quantized since the monitor was enabled
  float amax = 0;         ///< max |v| (NaN when v holds a NaN)
  float scale_min = 0;    ///< smallest scale (per tensor: the scale)
  float scale_max = 0;    ///< largest scale
  int64_t saturated = 0;  ///< elements the clamp to +-fmt_max changed: |v * scale| beyond what
                          ///< rounds to fmt_max (Inf included)
  int64_t underflow = 0;  ///< elements v != 0 cast to +-0
  double saturated_fraction() const;  ///< saturated / numel (NaN when numel == 0)
  double underflow_fraction() const;  ///< underflow / numel (NaN when numel == 0)
};

/// A host copy of a monitor's figures.
struct NumericsSnapshot {
  std::array<OperandNumerics, 3> operands;  ///< indexed by Operand
  /// Indexed by Product: the last measured relative error, NaN where never measured (or where
  /// the recipe runs that product in high precision).
  std::array<float, 3> product_errors{};
  int64_t forward_calls = 0;  ///< forward calls with autograd recording since enabled or reset
};

/// One layer's figures, kept on the layer's device. Layers hold one in their `numerics` member
/// (LinearFP8Impl and friends) and functional::linear_fp8 takes one in its options. Not a
/// parameter or buffer: checkpoints never hold it.
class NumericsMonitor {
 public:
  explicit NumericsMonitor(NumericsOptions options = {});

  const NumericsOptions& options() const { return options_; }

  /// Copies the figures to the host (synchronises with the device they live on).
  NumericsSnapshot read() const;
  /// Forgets every figure (the next quantizations fill them again).
  void reset();

  /// The device-side figures, for reading without a host synchronisation (each undefined until
  /// the first quantization): counts int64 [3, 3] per Operand {saturated, underflow, amax as the
  /// bits of a non-negative float}; scales fp32 [3, 2] per Operand {min, max}; errors fp32 [3]
  /// per Product.
  torch::Tensor counts() const { return counts_; }
  torch::Tensor scales() const { return scales_; }
  torch::Tensor errors() const { return errors_; }

  // ---- used by the engine ---------------------------------------------------------------------
  /// Called once per forward with autograd recording: whether this step measures product errors.
  bool begin_forward();
  /// Zeroes `operand`'s counts on `device` (allocating there on first use or after a move) and
  /// returns its row of counts() [3] for the quantize call to add to.
  torch::Tensor begin_operand(Operand operand, int64_t numel, const c10::Device& device);
  /// Records the scales of `operand`'s latest quantization (its scale_inv, any shape).
  void record_scales(Operand operand, const torch::Tensor& scale_inv);
  /// Records a product's relative error (a 0-d fp32 tensor on the monitor's device).
  void record_error(Product product, const torch::Tensor& relative_error);

 private:
  void ensure_on(const c10::Device& device);

  NumericsOptions options_;
  torch::Tensor counts_, scales_, errors_;
  std::array<int64_t, 3> numel_{};
  int64_t forward_calls_ = 0;
};

/// One line of numerics_table: a quantized tensor of a layer, or (when error_every > 0) one of
/// its products.
struct NumericsRow {
  std::string layer;        ///< the name named_modules() gives the layer ("" for the model itself)
  std::string tensor;       ///< "x", "weight", "grad_output" (figures), or "forward", "grad_input",
                            ///< "grad_weight" (relative_error)
  OperandNumerics figures;  ///< tensor rows
  float relative_error = NAN;  ///< product rows
};

/// Gives every FP8 linear layer in `model` (the model itself included; fp8nn::convert's output
/// too) a new NumericsMonitor with `options`; returns how many layers it found.
int64_t enable_numerics(torch::nn::Module& model, const NumericsOptions& options = {});
/// Removes the monitors of every FP8 linear layer in `model`.
void disable_numerics(torch::nn::Module& model);
/// The figures of every monitored layer of `model` (synchronises): three tensor rows a layer,
/// then three product rows where its monitor's error_every > 0.
std::vector<NumericsRow> numerics_table(const torch::nn::Module& model);

/// One line: layer, tensor, then numel, amax, scale range, saturated % and underflow % (tensor
/// rows) or the relative error (product rows).
std::ostream& operator<<(std::ostream& stream, const NumericsRow& row);

}  // namespace fp8nn

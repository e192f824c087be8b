// NumericsMonitor (include/fp8nn/numerics.h): the per-layer figures the quantize kernels count
// into, kept on the layer's device and copied to the host only when read.

#include <fp8nn/numerics.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>

namespace fp8nn {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float float_from_bits(int64_t bits) {
  const auto word = static_cast<uint32_t>(bits);
  float value = 0;
  std::memcpy(&value, &word, sizeof value);
  return value;
}

double fraction(int64_t part, int64_t whole) {
  return whole == 0 ? std::nan("") : static_cast<double>(part) / static_cast<double>(whole);
}

}  // namespace

const char* name_of(Operand operand) {
  static constexpr const char* kNames[] = {"x", "weight", "grad_output"};
  return kNames[static_cast<int>(operand)];
}

const char* name_of(Product product) {
  static constexpr const char* kNames[] = {"forward", "grad_input", "grad_weight"};
  return kNames[static_cast<int>(product)];
}

double OperandNumerics::saturated_fraction() const { return fraction(saturated, numel); }
double OperandNumerics::underflow_fraction() const { return fraction(underflow, numel); }

NumericsMonitor::NumericsMonitor(NumericsOptions options) : options_(options) {
  TORCH_CHECK_VALUE(options_.error_every() >= 0,
                    "fp8nn::NumericsMonitor: expected error_every >= 0 (0: never), got ",
                    options_.error_every());
}

void NumericsMonitor::ensure_on(const c10::Device& device) {
  if (counts_.defined() && counts_.device() == device) return;
  const auto on = at::TensorOptions().device(device);
  counts_ = at::zeros({3, 3}, on.dtype(at::kLong));
  scales_ = at::full({3, 2}, kNaN, on.dtype(at::kFloat));
  errors_ = at::full({3}, kNaN, on.dtype(at::kFloat));
  numel_ = {};
}

bool NumericsMonitor::begin_forward() {
  const int64_t every = options_.error_every();
  const bool measure = every > 0 && forward_calls_ % every == 0;
  ++forward_calls_;
  return measure;
}

torch::Tensor NumericsMonitor::begin_operand(Operand operand, int64_t numel,
                                             const c10::Device& device) {
  ensure_on(device);
  const auto index = static_cast<int64_t>(operand);
  numel_[index] = numel;
  auto row = counts_.select(0, index);
  row.zero_();
  return row;
}

void NumericsMonitor::record_scales(Operand operand, const torch::Tensor& scale_inv) {
  ensure_on(scale_inv.device());
  auto row = scales_.select(0, static_cast<int64_t>(operand));
  if (scale_inv.numel() == 0) {
    row.fill_(kNaN);
    return;
  }
  // The largest scale_inv belongs to the smallest scale.
  const auto [smallest, largest] = at::aminmax(scale_inv.reshape({-1}));
  row.copy_(at::stack({largest, smallest}).reciprocal());
}

void NumericsMonitor::record_error(Product product, const torch::Tensor& relative_error) {
  ensure_on(relative_error.device());
  errors_.select(0, static_cast<int64_t>(product)).copy_(relative_error.reshape({}));
}

NumericsSnapshot NumericsMonitor::read() const {
  NumericsSnapshot snapshot;
  snapshot.forward_calls = forward_calls_;
  snapshot.product_errors.fill(kNaN);
  if (!counts_.defined()) return snapshot;
  const auto counts = counts_.to(at::kCPU).contiguous();
  const auto scales = scales_.to(at::kCPU).contiguous();
  const auto errors = errors_.to(at::kCPU).contiguous();
  const int64_t* c = counts.data_ptr<int64_t>();
  const float* s = scales.data_ptr<float>();
  for (int i = 0; i < 3; ++i) {
    auto& figures = snapshot.operands[i];
    figures.numel = numel_[i];
    figures.saturated = c[3 * i];
    figures.underflow = c[3 * i + 1];
    figures.amax = numel_[i] == 0 ? kNaN : float_from_bits(c[3 * i + 2]);
    figures.scale_min = s[2 * i];
    figures.scale_max = s[2 * i + 1];
    snapshot.product_errors[i] = errors.data_ptr<float>()[i];
  }
  return snapshot;
}

void NumericsMonitor::reset() {
  counts_ = scales_ = errors_ = torch::Tensor();
  numel_ = {};
  forward_calls_ = 0;
}

std::ostream& operator<<(std::ostream& stream, const NumericsRow& row) {
  const auto flags = stream.flags();
  const auto precision = stream.precision();
  stream << std::left << std::setw(12) << (row.layer.empty() ? "(model)" : row.layer) << ' '
         << std::setw(12) << row.tensor << std::right << std::setprecision(5);
  if (row.tensor == "x" || row.tensor == "weight" || row.tensor == "grad_output") {
    const auto& f = row.figures;
    stream << " numel " << std::setw(11) << f.numel << "  amax " << f.amax << "  scale "
           << f.scale_min << ".." << f.scale_max << std::setprecision(4) << "  saturated "
           << 100 * f.saturated_fraction() << "%  underflow " << 100 * f.underflow_fraction()
           << '%';
  } else {
    stream << " relative error " << std::setprecision(4) << row.relative_error;
  }
  stream.flags(flags);
  stream.precision(precision);
  return stream;
}

}  // namespace fp8nn

#include "data.h"

#include "files.h"

#if __has_include(<ATen/cuda/CUDAGeneratorImpl.h>)
#include <ATen/cuda/CUDAGeneratorImpl.h>
#define TRAIN_MLP_HAS_CUDA_GENERATOR 1
#endif

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace train_mlp {
namespace {

torch::Generator generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

torch::Generator generator_on(const torch::Device& device, uint64_t seed) {
  if (device.is_cpu()) return generator(seed);
#ifdef TRAIN_MLP_HAS_CUDA_GENERATOR
  if (device.is_cuda()) {
    auto gen = at::make_generator<at::CUDAGeneratorImpl>(device.index() < 0 ? 0 : device.index());
    gen.set_current_seed(seed);
    return gen;
  }
#endif
  throw std::runtime_error("synthetic task: cannot draw random numbers on " + device.str());
}

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

// Shuffles rows with `seed` and splits off the last val_fraction as validation.
Dataset split(torch::Tensor x, torch::Tensor y, int64_t classes, double val_fraction,
              uint64_t seed, std::string description) {
  const int64_t n = x.size(0);
  const auto order = torch::randperm(n, generator(seed), torch::kLong);
  x = x.index_select(0, order);
  y = y.index_select(0, order);
  const int64_t val = std::max<int64_t>(1, static_cast<int64_t>(n * val_fraction));
  if (n - val < 1) fail("dataset has " + std::to_string(n) + " rows: too few to split");
  return {x.narrow(0, 0, n - val), y.narrow(0, 0, n - val), x.narrow(0, n - val, val),
          y.narrow(0, n - val, val), classes, std::move(description)};
}

bool parse_number(const std::string& field, double& value) {
  std::istringstream in(field);
  in >> value;
  return !in.fail() && (in >> std::ws).eof();
}

Dataset load_csv(const std::string& path, double val_fraction, uint64_t seed) {
  std::ifstream in(path);
  if (!in) fail("cannot open data file '" + path + "'");
  std::vector<float> features;
  std::vector<int64_t> labels;
  int64_t columns = -1, line_number = 0, max_label = -1;
  std::string line;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::stringstream row(line);
    for (std::string field; std::getline(row, field, ',');) fields.push_back(field);
    std::vector<double> values(fields.size());
    bool numeric = true;
    for (size_t i = 0; i < fields.size(); ++i) numeric = numeric && parse_number(fields[i], values[i]);
    if (!numeric) {
      if (line_number == 1 && columns < 0) continue;  // header
      fail(path + ":" + std::to_string(line_number) + ": expected numbers separated by commas, got '" +
           line + "'");
    }
    if (columns < 0) columns = static_cast<int64_t>(values.size());
    if (columns < 2) fail(path + ":" + std::to_string(line_number) + ": expected at least one feature and a label");
    if (static_cast<int64_t>(values.size()) != columns) {
      fail(path + ":" + std::to_string(line_number) + ": expected " + std::to_string(columns) +
           " columns like the first row, got " + std::to_string(values.size()));
    }
    const double label = values.back();
    if (label < 0 || label != static_cast<double>(static_cast<int64_t>(label))) {
      fail(path + ":" + std::to_string(line_number) +
           ": expected a non-negative integer class label in the last column, got " + fields.back());
    }
    for (int64_t i = 0; i + 1 < columns; ++i) features.push_back(static_cast<float>(values[i]));
    labels.push_back(static_cast<int64_t>(label));
    max_label = std::max(max_label, labels.back());
  }
  if (labels.size() < 2) fail("data file '" + path + "' has fewer than 2 data rows");
  const auto n = static_cast<int64_t>(labels.size());
  auto x = torch::from_blob(features.data(), {n, columns - 1}, torch::kFloat).clone();
  auto y = torch::from_blob(labels.data(), {n}, torch::kLong).clone();
  return split(x, y, max_label + 1, val_fraction, seed,
               "CSV " + path + " (" + std::to_string(n) + " rows)");
}

uint32_t read_big_endian(std::ifstream& in, const std::string& path) {
  unsigned char bytes[4];
  if (!in.read(reinterpret_cast<char*>(bytes), 4)) fail("'" + path + "': truncated IDX header");
  return (uint32_t(bytes[0]) << 24) | (uint32_t(bytes[1]) << 16) | (uint32_t(bytes[2]) << 8) | bytes[3];
}

// An IDX file of unsigned bytes: magic 0x00000801 (labels, 1-d) or 0x00000803 (images, 3-d).
torch::Tensor read_idx(const std::string& path, uint32_t expected_magic) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open MNIST file '" + path + "'");
  const uint32_t magic = read_big_endian(in, path);
  if (magic != expected_magic) fail("'" + path + "': not an MNIST IDX file of the expected kind");
  std::vector<int64_t> sizes;
  for (uint32_t d = 0; d < (magic & 0xff); ++d) sizes.push_back(read_big_endian(in, path));
  int64_t count = 1;
  for (auto s : sizes) count *= s;
  auto data = torch::empty({count}, torch::kUInt8);
  if (!in.read(reinterpret_cast<char*>(data.data_ptr<uint8_t>()), count)) {
    fail("'" + path + "': truncated data (expected " + std::to_string(count) + " bytes)");
  }
  return data.view(sizes);
}

Dataset load_mnist(const std::string& dir) {
  const auto file = [&](const char* name) { return join_path(dir, name); };
  auto images = [&](const char* name) {
    auto t = read_idx(file(name), 0x00000803);
    return t.view({t.size(0), -1}).to(torch::kFloat).div_(255.0).sub_(0.1307).div_(0.3081);
  };
  auto labels = [&](const char* name) { return read_idx(file(name), 0x00000801).to(torch::kLong); };
  Dataset d{images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
            images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"), 10,
            "MNIST " + dir};
  if (d.train_x.size(0) != d.train_y.size(0) || d.val_x.size(0) != d.val_y.size(0)) {
    fail("MNIST folder '" + dir + "': image and label counts differ");
  }
  return d;
}

}  // namespace

Dataset make_synthetic(int64_t features, int64_t classes, int64_t train_size, int64_t val_size,
                       uint64_t seed, const torch::Device& device) {
  auto gen = generator_on(device, seed);
  const auto on_device = torch::TensorOptions().device(device);
  const int64_t n = train_size + val_size;
  const int64_t hidden = 4 * features;
  const auto w1 = torch::randn({features, hidden}, gen, on_device) / std::sqrt(double(features));
  const auto w2 = torch::randn({hidden, classes}, gen, on_device) / std::sqrt(double(hidden));
  const auto x = torch::randn({n, features}, gen, on_device);
  // The teacher in slices of rows, so that its hidden activations never take n * hidden floats.
  auto logits = torch::empty({n, classes}, on_device);
  constexpr int64_t kTeacherRows = 1 << 16;
  for (int64_t begin = 0; begin < n; begin += kTeacherRows) {
    const int64_t rows = std::min(kTeacherRows, n - begin);
    logits.narrow(0, begin, rows)
        .copy_(torch::tanh(x.narrow(0, begin, rows).matmul(w1)).matmul(w2) * 4.0);
  }
  // Noise on the teacher's logits: about one label in ten disagrees with the clean teacher.
  const auto y = (logits + torch::randn({n, classes}, gen, on_device) * 0.5).argmax(1);
  return {x.narrow(0, 0, train_size), y.narrow(0, 0, train_size), x.narrow(0, train_size, val_size),
          y.narrow(0, train_size, val_size), classes,
          "synthetic teacher task (" + std::to_string(features) + " features, " +
              std::to_string(classes) + " classes, seed " + std::to_string(seed) + ", drawn on " +
              device.str() + ")"};
}

Dataset load_dataset(const std::string& path, double val_fraction, uint64_t seed) {
  if (is_directory(path)) return load_mnist(path);
  return load_csv(path, val_fraction, seed);
}

}  // namespace train_mlp

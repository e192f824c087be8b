#pragma once
// Data for train_mlp: the built-in synthetic task, CSV files and MNIST IDX files.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace train_mlp {

/// Features [n, d] (fp32) and integer class labels [n] (int64), split into train and validation.
struct Dataset {
  torch::Tensor train_x, train_y, val_x, val_y;
  int64_t classes = 0;
  std::string description;
};

/// A fixed random teacher network labels Gaussian inputs (with label noise): learnable, not
/// trivial, and no download. It is drawn on `device` (a training set of millions of rows, large
/// enough not to be memorised, is made in a second on a GPU), from a generator of that device
/// seeded with `seed`: the same on every CPU for one seed, and the same on every run on one
/// GPU model, but the CPU's draw and a GPU's are different data.
Dataset make_synthetic(int64_t features, int64_t classes, int64_t train_size, int64_t val_size,
                       uint64_t seed, const torch::Device& device = torch::kCPU);

/// `path` is a CSV file (features..., label; an optional header line) or a folder with the MNIST
/// IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...). Throws
/// std::runtime_error naming the file (and line, for CSV) on unreadable or malformed data.
/// CSV data is shuffled with `seed` and its last `val_fraction` becomes the validation set.
Dataset load_dataset(const std::string& path, double val_fraction, uint64_t seed);

}  // namespace train_mlp

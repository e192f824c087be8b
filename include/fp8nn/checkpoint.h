#pragma once
// Checkpoints that notice damage. torch::save/torch::load work on fp8nn modules as on any other,
// but torch's archive reader does not verify its CRCs: a flipped byte inside a tensor loads as a
// silently different weight. These write the same archive plus a checksum of every parameter and
// buffer, and load all or nothing:
//
//   fp8nn::save_checkpoint(*model, "model.pt");
//   fp8nn::load_checkpoint(*model, "model.pt");  // c10::Error naming the file if it is damaged

#include <torch/nn/module.h>

#include <string>

namespace fp8nn {

/// Writes `module`'s parameters and buffers (torch::save's archive) with their checksums to `path`.
void save_checkpoint(const torch::nn::Module& module, const std::string& path);

/// Reads a save_checkpoint file into `module` (same structure and shapes). A missing, truncated or
/// corrupted file, or one of another module, raises a c10::Error naming `path` and leaves
/// `module`'s parameters and buffers as they were.
void load_checkpoint(torch::nn::Module& module, const std::string& path);

}  // namespace fp8nn

#pragma once
// The few file-system operations train_mlp needs, with POSIX calls. Not std::filesystem: the
// PyPI torch wheel's libtorch.so exports its own std::filesystem symbols (another libstdc++'s),
// which the dynamic linker binds to first and which crash when called from code built here.

#include <string>

namespace train_mlp {

std::string join_path(const std::string& dir, const std::string& name);
bool is_directory(const std::string& path);
/// mkdir -p; throws std::runtime_error naming the path on failure.
void make_directories(const std::string& path);
/// rm -rf (best effort).
void remove_tree(const std::string& path);
/// A fresh, empty folder under $TMPDIR (or /tmp) whose name starts with `prefix`.
std::string make_temp_directory(const std::string& prefix);

}  // namespace train_mlp

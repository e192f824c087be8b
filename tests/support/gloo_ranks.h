#pragma once
// Data-parallel ranks inside one test process: threads, each a rank of one c10d process group
// with a Gloo backend over loopback (an in-process store for the rendezvous). Kept out of the
// test files because c10d's headers define logging macros (CHECK, ...) that clash with Catch2's.

#include <fp8nn/linear_functional.h>

#include <functional>

namespace fp8nn::test {

/// Runs body(rank, group) on `ranks` threads at once, `group` being the rank's process group
/// (none when `with_group` is false), and rethrows the first exception after all have finished.
/// Catch2 assertions belong on the calling thread, after this returns.
void run_on_gloo_ranks(int ranks, bool with_group,
                       const std::function<void(int rank, const ProcessGroupRef& group)>& body);

}  // namespace fp8nn::test

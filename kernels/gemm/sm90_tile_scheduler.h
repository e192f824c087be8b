#pragma once
// The order in which the persistent sm90 GEMM kernel visits its output tiles, in plain C++ that
// host code (the tests, on the CPU) and device code both compile.
//
// The output is m_blocks x n_blocks tiles. CTAs come in clusters of cluster_m stacked along M: the
// CTAs of a cluster take the tiles (cluster_m * row + rank, n) for rank 0 .. cluster_m - 1, so
// they share b's tile (one TMA multicast per stage feeds them all). A cluster tile is such a
// (row, n) pair; cluster c of `clusters` takes the cluster tiles c, c + clusters, c + 2 * clusters,
// ... When cluster_m does not divide m_blocks, the last row's higher ranks get m_block >= m_blocks:
// they still run the pipeline (their peers need their share of the multicast and their releases
// of each stage) and store nothing.
//
// Raster order: columns of kRasterWidth N-blocks, cluster rows down each column, N fastest inside
// a row, so that the CTAs of one wave share both operand slices in L2.

#include "kernels/common/fp8_format.h"  // FP8NN_HOST_DEVICE

namespace fp8nn::kernels::sm90 {

constexpr int kRasterWidth = 16;  // N-blocks per raster column

struct TileScheduler {
  int m_blocks = 0;
  int n_blocks = 0;
  int cluster_m = 1;

  FP8NN_HOST_DEVICE int cluster_rows() const { return (m_blocks + cluster_m - 1) / cluster_m; }
  FP8NN_HOST_DEVICE int cluster_tiles() const { return cluster_rows() * n_blocks; }

  // The tile of the CTA of rank `rank` in cluster tile `t` (0 <= t < cluster_tiles()).
  FP8NN_HOST_DEVICE void tile(int t, int rank, int& m_block, int& n_block) const {
    const int column_tiles = kRasterWidth * cluster_rows();
    const int column = t / column_tiles;
    const int within = t % column_tiles;
    const int first_n = column * kRasterWidth;
    const int width = n_blocks - first_n < kRasterWidth ? n_blocks - first_n : kRasterWidth;
    m_block = (within / width) * cluster_m + rank;
    n_block = first_n + within % width;
  }
};

}  // namespace fp8nn::kernels::sm90

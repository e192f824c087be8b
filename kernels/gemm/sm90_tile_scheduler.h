#pragma once
// The order in which the persistent sm90 GEMM kernel visits its output tiles, in plain C++ that
// host code (the tests, on the CPU) and device code both compile.
//
// The output is m_blocks x n_blocks tiles. CTAs come in clusters of cluster_m x cluster_n tiles
// (one of the two is 1): stacked along M, the CTAs of a cluster take the tiles
// (cluster_m * row + rank, n) for rank 0 .. cluster_m - 1, so that they share b's tile (one TMA
// multicast per stage feeds them all); side by side along N, the tiles (m, cluster_n * column +
// rank), sharing a's tile. A cluster tile is such a group; cluster c of `clusters` takes the
// cluster tiles c, c + clusters, c + 2 * clusters, ... When the cluster size does not divide the
// blocks, the last row's (column's) higher ranks get an m_block >= m_blocks (n_block >= n_blocks):
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
  int cluster_n = 1;

  FP8NN_HOST_DEVICE int cluster_rows() const { return (m_blocks + cluster_m - 1) / cluster_m; }
  FP8NN_HOST_DEVICE int cluster_columns() const { return (n_blocks + cluster_n - 1) / cluster_n; }
  FP8NN_HOST_DEVICE int cluster_tiles() const { return cluster_rows() * cluster_columns(); }

  // The tile of the CTA of rank `rank` in cluster tile `t` (0 <= t < cluster_tiles()).
  FP8NN_HOST_DEVICE void tile(int t, int rank, int& m_block, int& n_block) const {
    const int raster_columns = cluster_n < kRasterWidth ? kRasterWidth / cluster_n : 1;
    const int column_tiles = raster_columns * cluster_rows();
    const int column = t / column_tiles;
    const int within = t % column_tiles;
    const int first = column * raster_columns;
    const int left = cluster_columns() - first;
    const int width = left < raster_columns ? left : raster_columns;
    m_block = (within / width) * cluster_m + (cluster_m > 1 ? rank : 0);
    n_block = (first + within % width) * cluster_n + (cluster_n > 1 ? rank : 0);
  }
};

// The tile height (output rows) the kernel takes when its caller leaves the choice to it: 256
// rows, which read each tile of b once for twice the rows (fewer L2 bytes per FLOP: the faster
// tile wherever b's scale allows it, docs/blockwise-gemm-plan.md), as long as that still gives
// every SM a tile; else, and for b with a scale per row group (whose promotion reads per-column
// scales for one 128-row wave only), 128 rows. m, n: the output's size; 128 output columns per
// tile either way.
inline int default_tile_rows(long long m, long long n, bool b_per_row_group, int sm_count) {
  if (b_per_row_group) return 128;
  const long long tall_tiles = (m + 255) / 256 * ((n + 127) / 128);
  return tall_tiles >= sm_count ? 256 : 128;
}

// What the kernel runs when its caller leaves the cluster to it (cluster_m and cluster_n 0).
struct Configuration {
  int tile_m = 128;
  int cluster_m = 1;
  int cluster_n = 1;
  bool staged_epilogue = false;
};

// The kernel's choice of cluster, and of the epilogue with it: pairs whose shared operand is
// multicast, with the output staged through shared memory (the pairs' faster epilogue), where
// fp8nn_bench gemm measured them ahead of one CTA: 256-row tiles in pairs along N (b per tensor or
// per block), 128-row tiles with b per row group in pairs along M. Elsewhere (128-row tiles of b
// per tensor or block, accumulation across K, a single tile along the paired dimension) one CTA
// and the epilogue the caller asked for. tile_m: 0 (the kernel's choice, default_tile_rows), 128
// or 256.
inline Configuration default_configuration(long long m, long long n, int tile_m,
                                           bool b_per_row_group, bool accumulate_across_k,
                                           bool staged_epilogue, int sm_count) {
  Configuration c;
  c.tile_m = tile_m != 0 ? tile_m : default_tile_rows(m, n, b_per_row_group, sm_count);
  c.staged_epilogue = staged_epilogue;
  if (accumulate_across_k) return c;
  if (b_per_row_group && m > c.tile_m) {
    c.cluster_m = 2;
    c.staged_epilogue = true;
  } else if (!b_per_row_group && c.tile_m == 256 && n > 128) {
    c.cluster_n = 2;
    c.staged_epilogue = true;
  }
  return c;
}

}  // namespace fp8nn::kernels::sm90

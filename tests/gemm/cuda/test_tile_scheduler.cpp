// The persistent sm90 GEMM's tile order (kernels/gemm/sm90_tile_scheduler.h), on the CPU: every
// output tile is computed exactly once whatever the number of clusters, the CTAs of a cluster
// always share an operand's tile (along M: the same N-block, consecutive M-blocks; along N: the
// same M-block, consecutive N-blocks), and a CTA past M (N) appears only where the cluster size
// does not divide the M-blocks (N-blocks).

#include "catch.h"
#include "kernels/gemm/sm90_tile_scheduler.h"

#include <map>
#include <utility>
#include <vector>

namespace {

using fp8nn::kernels::sm90::kRasterWidth;
using fp8nn::kernels::sm90::TileScheduler;

// Walks the schedule as the kernel's CTAs do: cluster c of `clusters` takes the cluster tiles
// c, c + clusters, ...; each of its CTAs the tile of its rank.
void check_schedule(int m_blocks, int n_blocks, int cluster_m, int cluster_n, int clusters) {
  CAPTURE(m_blocks, n_blocks, cluster_m, cluster_n, clusters);
  const TileScheduler schedule{m_blocks, n_blocks, cluster_m, cluster_n};
  const int size = cluster_m * cluster_n;
  REQUIRE(schedule.cluster_tiles() ==
          (m_blocks + cluster_m - 1) / cluster_m * ((n_blocks + cluster_n - 1) / cluster_n));
  std::map<std::pair<int, int>, int> visits;
  int spare = 0;
  for (int c = 0; c < clusters; ++c) {
    for (int t = c; t < schedule.cluster_tiles(); t += clusters) {
      int first_m = -1, first_n = -1;
      for (int rank = 0; rank < size; ++rank) {
        int m = -1, n = -1;
        schedule.tile(t, rank, m, n);
        REQUIRE(m >= 0);
        REQUIRE(n >= 0);
        if (rank == 0) {
          first_m = m;
          first_n = n;
          REQUIRE(m % cluster_m == 0);
          REQUIRE(n % cluster_n == 0);
        } else if (cluster_m > 1) {
          CHECK(n == first_n);         // the cluster shares b's tile
          CHECK(m == first_m + rank);  // and takes consecutive M-blocks
        } else {
          CHECK(m == first_m);         // the cluster shares a's tile
          CHECK(n == first_n + rank);  // and takes consecutive N-blocks
        }
        if (m < m_blocks && n < n_blocks) {
          ++visits[{m, n}];
        } else {
          // the last row's (column's) spare ranks only
          REQUIRE(m < m_blocks - m_blocks % cluster_m + cluster_m);
          REQUIRE(n < n_blocks - n_blocks % cluster_n + cluster_n);
          REQUIRE((m >= m_blocks) != (n >= n_blocks));
          ++spare;
        }
      }
    }
  }
  CHECK(static_cast<int>(visits.size()) == m_blocks * n_blocks);
  for (const auto& [tile, count] : visits) {
    CAPTURE(tile.first, tile.second);
    CHECK(count == 1);
  }
  const int spare_rows = m_blocks % cluster_m == 0 ? 0 : cluster_m - m_blocks % cluster_m;
  const int spare_columns = n_blocks % cluster_n == 0 ? 0 : cluster_n - n_blocks % cluster_n;
  CHECK(spare == spare_rows * n_blocks + spare_columns * m_blocks);
}

}  // namespace

TEST_CASE("the sm90 tile schedule computes every output tile once, clusters sharing a tile") {
  for (const auto& [cluster_m, cluster_n] :
       std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {1, 2}}) {
    for (int m_blocks : {1, 2, 3, 7, 32, 33, 64}) {
      for (int n_blocks : {1, 2, 15, kRasterWidth, kRasterWidth + 1, 3 * kRasterWidth + 5, 112}) {
        for (int clusters : {1, 5, 66, 132, 1000}) {
          check_schedule(m_blocks, n_blocks, cluster_m, cluster_n, clusters);
        }
      }
    }
  }
}

TEST_CASE("the sm90 tile schedule runs down raster columns of kRasterWidth N-blocks") {
  // The first kRasterWidth * cluster_rows() cluster tiles stay inside the first N-column, N
  // fastest: consecutive CTAs of a wave read the same a rows and neighbouring b tiles.
  const TileScheduler schedule{8, 40, 2};
  for (int t = 0; t < kRasterWidth * schedule.cluster_rows(); ++t) {
    int m = -1, n = -1;
    schedule.tile(t, 0, m, n);
    CHECK(n == t % kRasterWidth);
    CHECK(m == 2 * (t / kRasterWidth));
  }
  // The last column is narrower (40 = 2 * 16 + 8): N wraps at its width.
  const int last_column = 2 * kRasterWidth * schedule.cluster_rows();
  int m = -1, n = -1;
  schedule.tile(last_column + 9, 1, m, n);
  CHECK(n == 2 * kRasterWidth + 1);
  CHECK(m == 2 * 1 + 1);
  // Pairs along N: a raster column still spans kRasterWidth N-blocks (8 pairs).
  const TileScheduler pairs{8, 40, 1, 2};
  for (int t = 0; t < (kRasterWidth / 2) * pairs.cluster_rows(); ++t) {
    pairs.tile(t, 1, m, n);
    CHECK(n == 2 * (t % (kRasterWidth / 2)) + 1);
    CHECK(m == t / (kRasterWidth / 2));
  }
}

TEST_CASE("the kernel takes 256-row tiles where they still give every SM a tile, else 128") {
  using fp8nn::kernels::sm90::default_tile_rows;
  // 132 SMs: 8192 x 4096 makes 32 x 32 tall tiles; 4096 x 1024 only 16 x 8 = 128.
  CHECK(default_tile_rows(8192, 4096, false, 132) == 256);
  CHECK(default_tile_rows(4096, 1024, false, 132) == 128);
  CHECK(default_tile_rows(4096, 1024, false, 128) == 256);  // exactly one tile per SM
  CHECK(default_tile_rows(1, 1, false, 1) == 256);
  // Ragged sizes round up: 257 rows are two tall tiles, 129 columns two tiles.
  CHECK(default_tile_rows(257, 129, false, 4) == 256);
  CHECK(default_tile_rows(256, 129, false, 4) == 128);
  // b with a scale per row group takes 128-row tiles whatever the size.
  CHECK(default_tile_rows(16384, 8192, true, 132) == 128);
}

TEST_CASE("the kernel's own configuration: pairs with the staged epilogue where it takes them") {
  using fp8nn::kernels::sm90::default_configuration;
  struct Expected {
    int tile_m, cluster_m, cluster_n;
    bool staged;
  };
  const auto check = [](const fp8nn::kernels::sm90::Configuration& c, const Expected& e) {
    CHECK(c.tile_m == e.tile_m);
    CHECK(c.cluster_m == e.cluster_m);
    CHECK(c.cluster_n == e.cluster_n);
    CHECK(c.staged_epilogue == e.staged);
  };
  // Arguments: m, n, tile_m, b per row group, accumulation across K, staged asked, SMs.
  // 256-row tiles (b per tensor or per block): pairs along N, the output staged.
  check(default_configuration(8192, 4096, 0, false, false, false, 132), {256, 1, 2, true});
  // A single N-block has no pair: one CTA, the epilogue as asked.
  check(default_configuration(8192, 128, 256, false, false, false, 132), {256, 1, 1, false});
  // 128-row tiles of b per tensor or block: one CTA, the epilogue as asked.
  check(default_configuration(4096, 1024, 0, false, false, true, 132), {128, 1, 1, true});
  check(default_configuration(4096, 1024, 0, false, false, false, 132), {128, 1, 1, false});
  // b per row group: 128-row tiles in pairs along M where there are two M-blocks.
  check(default_configuration(8192, 4096, 0, true, false, false, 132), {128, 2, 1, true});
  check(default_configuration(128, 4096, 0, true, false, false, 132), {128, 1, 1, false});
  // Accumulation across K: the kernel keeps one CTA (pairs along N only when asked for).
  check(default_configuration(8192, 4096, 0, false, true, false, 132), {256, 1, 1, false});
}

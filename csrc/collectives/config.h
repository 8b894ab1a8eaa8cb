// Tunables of the collective algorithms. Defaults are chosen by measurement
// (docs/benchmarks.md); the engine fills them from DIST_SYNC_* variables.
#pragma once

#include <cstddef>

namespace dist_sync {

struct CollectiveConfig {
  // Ring messages are cut into segments of this many bytes (DIST_SYNC_RING_SEGMENT_BYTES), so
  // reducing one segment overlaps the transfer of the next.
  size_t segment_bytes = size_t{256} << 10;
  // Allreduces of at most this many bytes use recursive doubling: log2(N) messages instead of
  // 2(N-1), which wins when latency dominates (DIST_SYNC_SMALL_ALLREDUCE_BYTES).
  size_t small_allreduce_bytes = size_t{64} << 10;
  // Segments in flight per direction.
  int in_flight = 4;
};

}  // namespace dist_sync

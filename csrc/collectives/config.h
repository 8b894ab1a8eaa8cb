// Tunables of the collective algorithms. Their defaults are chosen by measurement
// (docs/benchmarks.md) and declared in dist_sync/config.py; the engine fills them from there.
#pragma once

#include <cstddef>

#include "comm/communicator.h"

namespace dist_sync {

struct CollectiveConfig {
  // Ring and broadcast messages are cut into segments of this many bytes
  // (DIST_SYNC_RING_SEGMENT_BYTES), so reducing one segment overlaps the transfer of the next.
  // 0: chosen per communicator (segment_bytes_for).
  size_t segment_bytes;
  // Allreduces of at most this many bytes use recursive doubling: log2(N) messages instead of
  // 2(N-1), which wins when latency dominates (DIST_SYNC_SMALL_ALLREDUCE_BYTES).
  size_t small_allreduce_bytes;
  // Segments in flight per direction (DIST_SYNC_RING_IN_FLIGHT).
  int in_flight;
  // Every element is reduced in an order fixed by its tensor's size and its offset in it, so the
  // bits do not depend on fusion (DIST_SYNC_REPRODUCIBLE; Note [Canonical reduction order]).
  bool reproducible;
};

// Note [Segment size per transport]
// Within a host, Open MPI moves a large message with one copy and a segment of 1 MiB keeps the
// copy efficient while still pipelining (docs/benchmarks.md). Over TCP, a message above Open
// MPI's eager limit (64 KiB) needs a rendezvous handshake, and between two peers one
// direction's handshake waits behind the other direction's data in their shared connection:
// the ring then reaches about half the link rate (docs/benchmarks.md, "Several hosts";
// docs/architecture.md, "Across hosts"). 32 KiB segments go eagerly.
constexpr size_t kSegmentBytesWithinHost = size_t{1} << 20;
constexpr size_t kSegmentBytesAcrossHosts = size_t{32} << 10;

inline size_t segment_bytes_for(const Communicator& comm, const CollectiveConfig& config) {
  if (config.segment_bytes != 0) return config.segment_bytes;
  return comm.single_host() ? kSegmentBytesWithinHost : kSegmentBytesAcrossHosts;
}

}  // namespace dist_sync

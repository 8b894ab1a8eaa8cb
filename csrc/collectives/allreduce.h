// Allreduce: the ring for bandwidth, recursive doubling for latency.
#pragma once

#include "collectives/config.h"
#include "collectives/phase_log.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

// Reduces every rank's `in` side into every rank's `out` side (bit-identical on all ranks).
// Picks recursive doubling up to config.small_allreduce_bytes, the ring above.
void allreduce(Communicator& comm, const SpanList& buffer, DataType dtype, ReduceOp op,
               const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace,
               PhaseLog* phases = nullptr);

// Latency-optimal allreduce of a contiguous buffer, in place: ceil(log2 N) exchanges (plus one
// before and one after for ranks beyond the largest power of two). No scaling.
void recursive_doubling_allreduce(Communicator& comm, void* data, size_t count, DataType dtype,
                                  ReduceOp op, std::byte* scratch, int tag);

}  // namespace dist_sync

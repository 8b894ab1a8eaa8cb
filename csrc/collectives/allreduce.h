// Allreduce: the ring for bandwidth, recursive doubling for latency, chosen by size.
#pragma once

#include "collectives/config.h"
#include "collectives/phase_log.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

// Reduces every rank's `in` side into every rank's `out` side (bit-identical on all ranks).
// Picks a latency-bound algorithm up to config.small_allreduce_bytes, the ring above. With
// config.reproducible each span of `buffer` must be one whole tensor: its elements are reduced
// in an order fixed by the tensor alone (Note [Canonical reduction order]); otherwise recursive
// doubling and the ring over the fused buffer's even chunks.
void allreduce(Communicator& comm, const SpanList& buffer, DataType dtype, ReduceOp op,
               const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace,
               int tag, PhaseLog* phases = nullptr);

}  // namespace dist_sync

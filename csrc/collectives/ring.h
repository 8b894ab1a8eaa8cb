// Ring reduce-scatter / allgather / allreduce, segmented and pipelined.
//
// Note [Ring schedule]
// Ranks form a ring; rank r sends to r+1 and receives from r-1. The buffer is cut into N chunks
// (any boundaries: reducescatter and allgatherv use uneven ones). At step t rank r sends chunk
// (r-t-1) mod N and receives chunk (r-t-2) mod N. Steps 0..N-2 are the reduce-scatter: the
// received partial result is combined with this rank's own input, so after step N-2 rank r holds
// chunk r fully reduced (scaled there, once: Note [Scaling fused into the reduction]). Steps
// N-1..2N-3 are the allgather: each received chunk is final and is forwarded as is. Every rank
// sends 2(N-1)/N of the buffer, which is optimal.
//
// Each chunk is cut into segments and several segments are in flight in each direction: the
// segment received at step t is reduced and sent on as step t+1 as soon as it arrives, without
// waiting for the rest of step t. Every rank gets bit-identical results because each chunk is
// reduced at its owner only and then copied around.
#pragma once

#include <vector>

#include "collectives/config.h"
#include "collectives/phase_log.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

enum class RingPhases { kReduceScatter, kAllgather, kBoth };

// `chunk_bounds` holds N+1 byte offsets into `buffer` (multiples of the element size).
//   kBoth:          allreduce; every rank ends with the whole result in the buffer's out side.
//   kReduceScatter: rank r ends with chunk r reduced in out; other chunks' out is scratch.
//   kAllgather:     rank r's contribution is chunk r of the in side; everyone gets all of out.
void ring_collective(Communicator& comm, const SpanList& buffer,
                     const std::vector<size_t>& chunk_bounds, RingPhases ring_phases, DataType dtype,
                     ReduceOp op, const Scaling& scaling, const CollectiveConfig& config,
                     Workspace& workspace, int tag, PhaseLog* phases = nullptr);

// Chunk boundaries (bytes) that split `count` elements as evenly as possible, the first
// count % N chunks one element longer.
std::vector<size_t> even_chunk_bounds(size_t count, int size, size_t element_bytes);

}  // namespace dist_sync

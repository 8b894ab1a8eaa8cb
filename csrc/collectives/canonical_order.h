// The reduction order that makes an allreduce's bits independent of fusion (reproducible mode).
//
// Note [Canonical reduction order]
// The ring reduces chunk c along the chain c+1, c+2, ..., c (Note [Ring schedule]), and floating
// point addition is not associative, so an element's bits depend on which chunk it lies in. With
// the fused buffer cut into N even chunks, that chunk depends on everything fused before the
// element, i.e. on timing. Here every tensor (every span of the caller's list: one per tensor)
// is cut into N even blocks of its own, the first n % N one element longer, and block c of
// every tensor goes to ring chunk c: the ring sees a reordered span list holding block 0 of
// every tensor, then block 1 of every tensor, and so on. An element's chunk, hence the chain
// of ranks that reduces it, is then a function of its tensor's element count and its offset in
// that tensor only; fusion, the fusion threshold, segment sizes and submission order no longer
// matter, because the reduction itself is element-wise and segment-agnostic.
//
// It stays bandwidth-optimal: chunk c holds 1/N of every tensor, so the chunks differ by at most
// one element per fused tensor and every rank still sends 2(N-1)/N of the buffer. The price is
// shorter contiguous pieces (1/N of a tensor instead of whole tensors), so more segments
// straddle pieces and are packed (Note [Segments follow tensors]); docs/benchmarks.md has the
// measured cost.
//
// Small buffers do not use recursive doubling (its pairwise tree is a different order, so the
// size-based choice would change the bits). Each rank sends every other rank that rank's chunk
// of the canonical layout directly (one step, N-1 messages of 1/N of the buffer), each owner
// reduces its chunk along the ring's chain with the same reduce() calls the ring makes (prescale
// and finalize included), and Bruck's allgather (ceil(log2 N) exchanges) spreads the results:
// the bits are the ring's whatever the size, and each rank still moves only 2(N-1)/N of the
// buffer. Gathering every input instead (N-1 buffers into each rank) measured 1.2-1.6x
// recursive doubling's time at 16-64 KiB on 3 and 4 ranks; this path still takes 1.3-2.2x
// there (docs/benchmarks.md), which is why DIST_SYNC_REPRODUCIBLE is off by default.
#pragma once

#include <vector>

#include "collectives/phase_log.h"
#include "collectives/span_list.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "reduce/reduce.h"

namespace dist_sync {

struct CanonicalLayout {
  SpanList buffer;                   // block 0 of every tensor, then block 1 of every tensor, ...
  std::vector<size_t> chunk_bounds;  // N+1 byte offsets into `buffer`: chunk c = every block c
};

// `tensors`: one span per tensor (a span is never split between two tensors).
CanonicalLayout canonical_layout(const SpanList& tensors, size_t element_bytes, int size);

// The small-buffer allreduce: every rank sends each owner its chunk of the canonical layout
// directly, the owner reduces it along the ring's chain, and Bruck's allgather spreads the
// results. Bit-identical to ring_collective over canonical_layout(tensors).
void small_reproducible_allreduce(Communicator& comm, const SpanList& tensors, DataType dtype,
                                  ReduceOp op, const Scaling& scaling, Workspace& workspace,
                                  int tag, PhaseLog* phases = nullptr);

}  // namespace dist_sync

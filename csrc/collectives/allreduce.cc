#include "collectives/allreduce.h"

#include "collectives/canonical_order.h"
#include "collectives/recursive_doubling.h"
#include "collectives/ring.h"

namespace dist_sync {

void allreduce(Communicator& comm, const SpanList& buffer, DataType dtype, ReduceOp op,
               const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace,
               int tag, PhaseLog* phases) {
  const size_t element_bytes = dtype_size(dtype);
  const size_t bytes = buffer.bytes();
  if (bytes == 0) return;
  if (comm.size() > 1 && config.reproducible) {
    // Note [Canonical reduction order]: both paths give the same bits, so the size-based
    // choice is free to optimise latency.
    if (bytes > config.small_allreduce_bytes) {
      const CanonicalLayout layout = canonical_layout(buffer, element_bytes, comm.size());
      ring_collective(comm, layout.buffer, layout.chunk_bounds, RingPhases::kBoth, dtype, op,
                      scaling, config, workspace, tag, phases);
      return;
    }
    small_reproducible_allreduce(comm, buffer, dtype, op, scaling, workspace, tag, phases);
    return;
  }
  if (comm.size() > 1 && bytes > config.small_allreduce_bytes) {
    ring_collective(comm, buffer, even_chunk_bounds(bytes / element_bytes, comm.size(), element_bytes),
                    RingPhases::kBoth, dtype, op, scaling, config, workspace, tag, phases);
    return;
  }
  // Small: pack (applying the prescale) into the fusion buffer, exchange whole buffers, unpack
  // (applying the postscale). The copies cost less than a message per tensor.
  std::byte* fused = workspace.get(Workspace::kFusion, bytes);
  std::byte* cursor = fused;
  for (const Span& span : buffer.spans()) {
    scale_copy(cursor, span.in, span.bytes / element_bytes, dtype, scaling.prescale, 1);
    cursor += span.bytes;
  }
  end_phase(phases, "FUSION_COPY_IN");
  recursive_doubling_allreduce(comm, fused, bytes / element_bytes, dtype, op,
                               workspace.get(Workspace::kFusionPeer, bytes), tag);
  end_phase(phases, "RECURSIVE_DOUBLING");
  cursor = fused;
  for (const Span& span : buffer.spans()) {
    scale_copy(span.out, cursor, span.bytes / element_bytes, dtype, scaling.postscale,
               scaling.divisor);
    cursor += span.bytes;
  }
  end_phase(phases, "FUSION_COPY_OUT");
}

}  // namespace dist_sync

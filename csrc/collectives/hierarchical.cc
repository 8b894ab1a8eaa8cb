#include "collectives/hierarchical.h"

#include "collectives/allreduce.h"
#include "collectives/canonical_order.h"
#include "collectives/ring.h"

namespace dist_sync {

void hierarchical_allreduce(Communicator& local, Communicator& cross, const SpanList& buffer,
                            DataType dtype, ReduceOp op, const Scaling& scaling,
                            const CollectiveConfig& config, Workspace& workspace, int tag,
                            PhaseLog* phases) {
  const size_t element_bytes = dtype_size(dtype);
  const size_t count = buffer.bytes() / element_bytes;
  if (count == 0) return;
  // Reproducible: every tensor is cut into blocks over the host's ranks, and each block into
  // blocks over the hosts by the cross allreduce (Note [Canonical reduction order]), so an
  // element's order depends on its tensor alone here too.
  const CanonicalLayout layout =
      config.reproducible
          ? canonical_layout(buffer, element_bytes, local.size())
          : CanonicalLayout{buffer, even_chunk_bounds(count, local.size(), element_bytes)};
  const SpanList& ordered = layout.buffer;
  const std::vector<size_t>& bounds = layout.chunk_bounds;
  const size_t mine = static_cast<size_t>(local.rank());

  // (1) Within the host: this rank ends with chunk `mine` of the host's sum (prescaled).
  const Scaling prescale_only{scaling.prescale, 1.0, 1};
  ring_collective(local, ordered, bounds, RingPhases::kReduceScatter, dtype, op, prescale_only,
                  config, workspace, tag);
  end_phase(phases, "HOST_REDUCE_SCATTER");
  const SpanList results = ordered.results_in_place();

  // (2) Across hosts, on that chunk; the final scaling happens here, once per element.
  const Scaling finish{1.0, scaling.postscale, scaling.divisor};
  allreduce(cross, results.slice(bounds[mine], bounds[mine + 1] - bounds[mine]), dtype, op, finish,
            config, workspace, tag);
  end_phase(phases, "CROSS_HOST_ALLREDUCE");

  // (3) Within the host: everyone gets every chunk.
  ring_collective(local, results, bounds, RingPhases::kAllgather, dtype, op, Scaling{}, config,
                  workspace, tag);
  end_phase(phases, "HOST_ALLGATHER");
}

}  // namespace dist_sync

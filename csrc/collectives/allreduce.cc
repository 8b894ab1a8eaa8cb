#include "collectives/allreduce.h"

#include <cstring>

#include "collectives/ring.h"

namespace dist_sync {
namespace {

}  // namespace

// Note [Deterministic pairing]
// Partners combine as op(lower rank's value, higher rank's value) on both sides, so the two
// results are bit-identical even where op is not bitwise commutative (min/max of +0 and -0,
// NaN payloads).
void recursive_doubling_allreduce(Communicator& comm, void* data, size_t count, DataType dtype,
                                  ReduceOp op, std::byte* scratch, int tag) {
  const int size = comm.size();
  const int rank = comm.rank();
  const size_t bytes = count * dtype_size(dtype);
  if (size == 1 || count == 0) return;
  int pow2 = 1;
  while (pow2 * 2 <= size) pow2 *= 2;
  const int extra = size - pow2;
  const Scaling plain;
  auto combine = [&](bool mine_is_lower) {
    if (mine_is_lower) {
      reduce(data, data, scratch, count, dtype, op, plain, false);
    } else {
      reduce(data, scratch, data, count, dtype, op, plain, false);
    }
  };

  // Ranks 0..2*extra-1 pair up (even, odd); the even one hands its data to the odd one and sits
  // out, so a power-of-two group remains.
  int group_rank;
  if (rank < 2 * extra) {
    if (rank % 2 == 0) {
      TransferPtr sending = comm.isend(data, bytes, rank + 1, tag);
      comm.wait(*sending, "recursive-doubling allreduce", rank + 1);
      TransferPtr receiving = comm.irecv(data, bytes, rank + 1, tag);
      comm.wait(*receiving, "recursive-doubling allreduce", rank + 1);
      return;
    }
    TransferPtr receiving = comm.irecv(scratch, bytes, rank - 1, tag);
    comm.wait(*receiving, "recursive-doubling allreduce", rank - 1);
    combine(/*mine_is_lower=*/false);
    group_rank = rank / 2;
  } else {
    group_rank = rank - extra;
  }
  for (int mask = 1; mask < pow2; mask <<= 1) {
    const int partner_group = group_rank ^ mask;
    const int partner = partner_group < extra ? partner_group * 2 + 1 : partner_group + extra;
    comm.sendrecv(data, scratch, bytes, partner, tag, "recursive-doubling allreduce");
    combine(group_rank < partner_group);
  }
  if (rank < 2 * extra) {
    TransferPtr sending = comm.isend(data, bytes, rank - 1, tag);
    comm.wait(*sending, "recursive-doubling allreduce", rank - 1);
  }
}

void allreduce(Communicator& comm, const SpanList& buffer, DataType dtype, ReduceOp op,
               const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace,
               PhaseLog* phases) {
  const size_t element_bytes = dtype_size(dtype);
  const size_t bytes = buffer.bytes();
  if (bytes == 0) return;
  if (comm.size() > 1 && bytes > config.small_allreduce_bytes) {
    ring_collective(comm, buffer, even_chunk_bounds(bytes / element_bytes, comm.size(), element_bytes),
                    RingPhases::kBoth, dtype, op, scaling, config, workspace, kTagAllreduce, phases);
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
                               workspace.get(Workspace::kFusionPeer, bytes), kTagAllreduce);
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

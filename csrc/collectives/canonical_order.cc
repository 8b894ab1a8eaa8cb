#include "collectives/canonical_order.h"

#include <algorithm>
#include <cstring>

#include "comm/waiter.h"
#include "common/errors.h"

namespace dist_sync {
namespace {

struct Block {
  size_t begin;  // elements into the tensor
  size_t count;
};

// Block c of a tensor of `elements` elements over `size` ranks.
Block block_of(size_t elements, int size, int c) {
  const size_t ranks = static_cast<size_t>(size);
  const size_t chunk = static_cast<size_t>(c);
  const size_t base = elements / ranks;
  const size_t extra = elements % ranks;
  return Block{chunk * base + std::min(chunk, extra), base + (chunk < extra ? 1 : 0)};
}

// Bruck's allgather: `gathered` holds N blocks of `bytes`, block 0 this rank's input on entry;
// on return block i holds rank (rank + i) mod N's input. ceil(log2 N) exchanges.
void bruck_allgather(Communicator& comm, std::byte* gathered, size_t bytes, int tag) {
  const int size = comm.size();
  const int rank = comm.rank();
  for (int distance = 1; distance < size; distance *= 2) {
    const size_t blocks = static_cast<size_t>(std::min(distance, size - distance));
    const int to = (rank - distance + size) % size;
    const int from = (rank + distance) % size;
    comm.shift(gathered, to, gathered + static_cast<size_t>(distance) * bytes, from,
               blocks * bytes, tag, "reproducible small allreduce");
  }
}

}  // namespace

CanonicalLayout canonical_layout(const SpanList& tensors, size_t element_bytes, int size) {
  CanonicalLayout layout;
  layout.chunk_bounds.push_back(0);
  for (int c = 0; c < size; ++c) {
    for (const Span& tensor : tensors.spans()) {
      DS_ASSERT(tensor.bytes % element_bytes == 0, "tensors hold whole elements");
      const Block block = block_of(tensor.bytes / element_bytes, size, c);
      const size_t offset = block.begin * element_bytes;
      layout.buffer.add(tensor.in + offset, tensor.out == nullptr ? nullptr : tensor.out + offset,
                        block.count * element_bytes);
    }
    layout.chunk_bounds.push_back(layout.buffer.bytes());
  }
  return layout;
}

void small_reproducible_allreduce(Communicator& comm, const SpanList& tensors, DataType dtype,
                                  ReduceOp op, const Scaling& scaling, Workspace& workspace,
                                  int tag, PhaseLog* phases) {
  const int size = comm.size();
  const int rank = comm.rank();
  const size_t ranks = static_cast<size_t>(size);
  const size_t me = static_cast<size_t>(rank);
  const size_t element_bytes = dtype_size(dtype);
  DS_ASSERT(size > 1, "one rank needs no exchange");
  const CanonicalLayout layout = canonical_layout(tensors, element_bytes, size);
  const std::vector<size_t>& bounds = layout.chunk_bounds;
  const size_t bytes = layout.buffer.bytes();
  size_t widest = 0;  // chunks differ by at most one element per tensor
  for (size_t c = 0; c < ranks; ++c) widest = std::max(widest, bounds[c + 1] - bounds[c]);
  const size_t mine = bounds[me + 1] - bounds[me];

  // This rank's input in canonical order, then every rank's copy of chunk `rank`.
  std::byte* packed = workspace.get(Workspace::kFusion, bytes + ranks * widest);
  std::byte* inputs = packed + bytes;
  std::byte* partial = workspace.get(Workspace::kFusionPeer, widest);  // chunk `rank`'s result
  layout.buffer.gather_in(0, bytes, packed);
  std::memcpy(inputs + me * widest, packed + bounds[me], mine);
  {
    std::vector<TransferPtr> transfers;
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      const size_t p = static_cast<size_t>(peer);
      transfers.push_back(comm.irecv(inputs + p * widest, mine, peer, tag));
      transfers.push_back(comm.isend(packed + bounds[p], bounds[p + 1] - bounds[p], peer, tag));
    }
    Waiter waiter(comm, "reproducible small allreduce");
    for (size_t done = 0; done < transfers.size();) {
      bool progressed = false;
      for (TransferPtr& transfer : transfers) {
        if (transfer != nullptr && transfer->test()) {
          transfer.reset();
          ++done;
          progressed = true;
        }
      }
      if (progressed) {
        waiter.progressed();
      } else {
        waiter.idle(-1);
      }
    }
  }
  end_phase(phases, "SCATTER");

  // Note [Canonical reduction order]: chunk `rank` is started by rank+1 (its input, prescaled,
  // as the ring's first send) and each next rank q combines reduce(own = q's input,
  // other = the partial), this rank finalizing last.
  const size_t count = mine / element_bytes;
  const size_t first = (me + 1) % ranks;
  if (scaling.has_prescale()) {
    scale_copy(partial, inputs + first * widest, count, dtype, scaling.prescale, 1);
  } else {
    std::memcpy(partial, inputs + first * widest, mine);
  }
  for (size_t k = 2; k <= ranks; ++k) {
    const bool last = k == ranks;
    reduce(partial, inputs + ((me + k) % ranks) * widest, partial, count, dtype,
           op, scaling, last);
  }
  end_phase(phases, "REDUCE");

  // Everyone gets every chunk; Bruck's block i is rank + i's chunk. The inputs are consumed,
  // so their room holds the blocks.
  std::byte* rotated = inputs;
  std::memcpy(rotated, partial, mine);
  bruck_allgather(comm, rotated, widest, tag);
  for (size_t i = 0; i < ranks; ++i) {
    const size_t c = (me + i) % ranks;
    layout.buffer.scatter_out(bounds[c], bounds[c + 1] - bounds[c], rotated + i * widest);
  }
  end_phase(phases, "ALLGATHER");
}

}  // namespace dist_sync

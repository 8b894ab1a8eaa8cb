#include "collectives/canonical_order.h"

#include <algorithm>
#include <cstring>

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

void gather_reduce_allreduce(Communicator& comm, const SpanList& tensors, DataType dtype,
                             ReduceOp op, const Scaling& scaling, Workspace& workspace, int tag) {
  const int size = comm.size();
  const int rank = comm.rank();
  const size_t element_bytes = dtype_size(dtype);
  const size_t bytes = tensors.bytes();
  DS_ASSERT(size > 1, "one rank needs no exchange");
  std::byte* gathered = workspace.get(Workspace::kFusion, bytes * static_cast<size_t>(size));
  std::byte* partial = workspace.get(Workspace::kFusionPeer, bytes);
  tensors.gather_in(0, bytes, gathered);
  bruck_allgather(comm, gathered, bytes, tag);
  auto input_of = [&](int from_rank, size_t offset) -> const std::byte* {
    const size_t block = static_cast<size_t>((from_rank - rank + size) % size);
    return gathered + block * bytes + offset;
  };

  // Note [Canonical reduction order]: block c is started by rank c+1 (its input, prescaled, as
  // the ring's first send) and each next rank q combines reduce(own = q's input, other = the
  // partial), the last one (rank c) finalizing.
  size_t tensor_offset = 0;
  for (const Span& tensor : tensors.spans()) {
    const size_t elements = tensor.bytes / element_bytes;
    for (int c = 0; c < size; ++c) {
      const Block block = block_of(elements, size, c);
      if (block.count == 0) continue;
      const size_t offset = tensor_offset + block.begin * element_bytes;
      std::byte* acc = partial + offset;
      const int first = (c + 1) % size;
      if (scaling.has_prescale()) {
        scale_copy(acc, input_of(first, offset), block.count, dtype, scaling.prescale, 1);
      } else {
        std::memcpy(acc, input_of(first, offset), block.count * element_bytes);
      }
      for (int k = 1; k < size; ++k) {
        const bool last = k == size - 1;
        std::byte* target = last ? tensor.out + block.begin * element_bytes : acc;
        reduce(target, input_of((c + 1 + k) % size, offset), acc, block.count, dtype, op, scaling,
               last);
      }
    }
    tensor_offset += tensor.bytes;
  }
}

}  // namespace dist_sync

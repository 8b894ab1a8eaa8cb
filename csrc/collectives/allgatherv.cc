#include "collectives/allgatherv.h"

#include "collectives/ring.h"

namespace dist_sync {

void allgatherv(Communicator& comm, const void* in, void* out,
                const std::vector<size_t>& block_bytes, const CollectiveConfig& config,
                Workspace& workspace, int tag) {
  const size_t size = static_cast<size_t>(comm.size());
  DS_ASSERT(block_bytes.size() == size, "one block size per rank");
  std::vector<size_t> bounds(size + 1, 0);
  for (size_t r = 0; r < size; ++r) bounds[r + 1] = bounds[r] + block_bytes[r];
  // Only this rank's block of the in side is ever read; the rest of the span's in pointer is
  // never dereferenced, so the span is laid over `out` and its own block points at `in`.
  const size_t rank = static_cast<size_t>(comm.rank());
  auto* out_bytes = static_cast<std::byte*>(out);
  SpanList buffer;
  buffer.add(out_bytes, out_bytes, bounds[rank]);
  buffer.add(in, out_bytes + bounds[rank], block_bytes[rank]);
  buffer.add(out_bytes + bounds[rank + 1], out_bytes + bounds[rank + 1], bounds[size] - bounds[rank + 1]);
  ring_collective(comm, buffer, bounds, RingPhases::kAllgather, DataType::kUInt8, ReduceOp::kSum,
                  Scaling{}, config, workspace, tag);
}

}  // namespace dist_sync

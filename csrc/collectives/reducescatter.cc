#include "collectives/reducescatter.h"

#include "collectives/ring.h"

namespace dist_sync {

void reducescatter(Communicator& comm, const void* in, void* out, void* scratch,
                   const std::vector<size_t>& element_bounds, DataType dtype, ReduceOp op,
                   const Scaling& scaling, const CollectiveConfig& config, Workspace& workspace,
                   int tag) {
  const size_t element_bytes = dtype_size(dtype);
  const size_t rank = static_cast<size_t>(comm.rank());
  std::vector<size_t> bounds(element_bounds.size());
  for (size_t i = 0; i < bounds.size(); ++i) bounds[i] = element_bounds[i] * element_bytes;
  const auto* in_bytes = static_cast<const std::byte*>(in);
  auto* scratch_bytes = static_cast<std::byte*>(scratch);
  SpanList buffer;
  buffer.add(in_bytes, scratch_bytes, bounds[rank]);
  buffer.add(in_bytes + bounds[rank], out, bounds[rank + 1] - bounds[rank]);
  buffer.add(in_bytes + bounds[rank + 1], scratch_bytes + bounds[rank + 1],
             bounds.back() - bounds[rank + 1]);
  ring_collective(comm, buffer, bounds, RingPhases::kReduceScatter, dtype, op, scaling, config,
                  workspace, tag);
}

}  // namespace dist_sync

#include <memory>

#include "collectives/reducescatter.h"
#include "collectives/ring.h"
#include "engine/executors/executor.h"

namespace dist_sync {

// Rank r gets rows [start_r, end_r) of the result, the first rows % size ranks one row more;
// the other ranks' partial results pass through the fusion buffer. A grouped reducescatter
// (several tensors in one request, negotiated as one unit) scatters each tensor in turn; this
// rank's pieces lie one after the other in one output buffer.
void execute_reducescatter(const ExecutionContext& context, const Response& response,
                           const std::vector<Request*>& locals, OpResult& result) {
  const RequestMeta& meta = response.requests.front();
  const Request* local = locals.front();
  const int size = context.comm.size();
  const size_t me = static_cast<size_t>(context.comm.rank());
  std::vector<std::vector<size_t>> element_bounds(meta.tensors.size());
  std::vector<size_t> offsets(meta.tensors.size() + 1, 0);
  std::vector<size_t> my_rows(meta.tensors.size());
  for (size_t t = 0; t < meta.tensors.size(); ++t) {
    const TensorMeta& tensor = meta.tensors[t];
    const size_t row_elements = static_cast<size_t>(tensor.row_elements());
    const std::vector<size_t> row_bounds =
        even_chunk_bounds(static_cast<size_t>(tensor.rows()), size, 1);
    for (const size_t bound : row_bounds) element_bounds[t].push_back(bound * row_elements);
    my_rows[t] = row_bounds[me + 1] - row_bounds[me];
    offsets[t + 1] = offsets[t] + my_rows[t] * row_elements * dtype_size(tensor.dtype);
  }
  auto output = std::make_shared<OutputBuffer>(offsets.back());
  for (size_t t = 0; t < meta.tensors.size(); ++t) {
    const TensorMeta& tensor = meta.tensors[t];
    const size_t total_bytes = tensor.bytes();
    std::byte* scratch = context.workspace.get(Workspace::kFusion, total_bytes);
    const void* input = local != nullptr ? local->inputs[t] : context.zeros.get(total_bytes);
    reducescatter(context.comm, input, output->data() + offsets[t], scratch, element_bounds[t],
                  tensor.dtype, meta.reduce_op, scaling_of(meta, size), context.collectives,
                  context.workspace, op_traits(OpType::kReducescatter).tag);
  }
  result.output = std::move(output);
  result.output_shape = meta.tensors.front().shape;
  if (result.output_shape.empty()) result.output_shape.push_back(1);
  result.output_shape[0] = static_cast<int64_t>(my_rows.front());
}

}  // namespace dist_sync

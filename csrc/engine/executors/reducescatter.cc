#include <memory>

#include "collectives/reducescatter.h"
#include "collectives/ring.h"
#include "engine/executors/executor.h"

namespace dist_sync {

// Rank r gets rows [start_r, end_r) of the result, the first rows % size ranks one row more;
// the other ranks' partial results pass through the fusion buffer.
void execute_reducescatter(const ExecutionContext& context, const Response& response,
                           const std::vector<Request*>& locals, OpResult& result) {
  const RequestMeta& meta = response.requests.front();
  const TensorMeta& tensor = meta.tensors.front();
  const Request* local = locals.front();
  const int size = context.comm.size();
  const size_t row_elements = static_cast<size_t>(tensor.row_elements());
  const size_t element_bytes = dtype_size(tensor.dtype);
  const std::vector<size_t> row_bounds = even_chunk_bounds(static_cast<size_t>(tensor.rows()), size, 1);
  std::vector<size_t> element_bounds(row_bounds.size());
  for (size_t i = 0; i < row_bounds.size(); ++i) element_bounds[i] = row_bounds[i] * row_elements;
  const size_t me = static_cast<size_t>(context.comm.rank());
  const size_t my_rows = row_bounds[me + 1] - row_bounds[me];
  auto output = std::make_shared<OutputBuffer>(my_rows * row_elements * element_bytes);
  const size_t total_bytes = tensor.bytes();
  std::byte* scratch = context.workspace.get(Workspace::kFusion, total_bytes);
  const void* input = local != nullptr ? local->inputs.front() : context.zeros.get(total_bytes);
  reducescatter(context.comm, input, output->data(), scratch, element_bounds, tensor.dtype,
                meta.reduce_op, scaling_of(meta, size), context.collectives, context.workspace,
                op_traits(OpType::kReducescatter).tag);
  result.output = std::move(output);
  result.output_shape = tensor.shape;
  if (result.output_shape.empty()) result.output_shape.push_back(1);
  result.output_shape[0] = static_cast<int64_t>(my_rows);
}

}  // namespace dist_sync

#include <memory>

#include "collectives/allgatherv.h"
#include "engine/executors/executor.h"

namespace dist_sync {

// Rows per rank come from negotiation (Response::rows_by_rank); a joined rank contributes none.
void execute_allgather(const ExecutionContext& context, const Response& response,
                       const std::vector<Request*>& locals, OpResult& result) {
  const TensorMeta& tensor = response.requests.front().tensors.front();
  const Request* local = locals.front();
  const size_t row_bytes = static_cast<size_t>(tensor.row_elements()) * dtype_size(tensor.dtype);
  std::vector<size_t> blocks(static_cast<size_t>(context.comm.size()));
  int64_t total_rows = 0;
  for (size_t r = 0; r < blocks.size(); ++r) {
    const int64_t rows = response.rows_by_rank.front()[r];
    blocks[r] = static_cast<size_t>(rows) * row_bytes;
    total_rows += rows;
  }
  auto output = std::make_shared<OutputBuffer>(static_cast<size_t>(total_rows) * row_bytes);
  const void* input = local != nullptr ? local->inputs.front() : nullptr;
  allgatherv(context.comm, input, output->data(), blocks, context.collectives, context.workspace,
             op_traits(OpType::kAllgather).tag);
  result.output = std::move(output);
  result.output_shape = tensor.shape.empty() ? std::vector<int64_t>{total_rows} : tensor.shape;
  result.output_shape[0] = total_rows;
  // Each rank's row count, so callers can split the result (allgather's backward) for free.
  result.received_splits = response.rows_by_rank.front();
}

}  // namespace dist_sync

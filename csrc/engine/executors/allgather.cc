#include <memory>

#include "collectives/allgatherv.h"
#include "engine/executors/executor.h"

namespace dist_sync {

// Rows per rank come from negotiation (Response::rows_by_rank); a joined rank contributes none.
// A grouped allgather (several tensors in one request, negotiated as one unit) gathers each
// tensor in turn into one output buffer, the tensors' results one after the other.
void execute_allgather(const ExecutionContext& context, const Response& response,
                       const std::vector<Request*>& locals, OpResult& result) {
  const std::vector<TensorMeta>& tensors = response.requests.front().tensors;
  const Request* local = locals.front();
  const size_t size = static_cast<size_t>(context.comm.size());
  std::vector<std::vector<size_t>> blocks(tensors.size(), std::vector<size_t>(size));
  std::vector<size_t> offsets(tensors.size() + 1, 0);
  int64_t first_total_rows = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const size_t row_bytes =
        static_cast<size_t>(tensors[t].row_elements()) * dtype_size(tensors[t].dtype);
    size_t total = 0;
    for (size_t r = 0; r < size; ++r) {
      const int64_t rows = response.rows_by_rank[t][r];
      blocks[t][r] = static_cast<size_t>(rows) * row_bytes;
      total += blocks[t][r];
      if (t == 0) first_total_rows += rows;
    }
    offsets[t + 1] = offsets[t] + total;
  }
  auto output = std::make_shared<OutputBuffer>(offsets.back());
  for (size_t t = 0; t < tensors.size(); ++t) {
    const void* input = local != nullptr ? local->inputs[t] : nullptr;
    allgatherv(context.comm, input, output->data() + offsets[t], blocks[t], context.collectives,
               context.workspace, op_traits(OpType::kAllgather).tag);
  }
  result.output = std::move(output);
  const TensorMeta& first = tensors.front();
  result.output_shape = first.shape.empty() ? std::vector<int64_t>{first_total_rows} : first.shape;
  result.output_shape[0] = first_total_rows;
  // Each rank's row count ([tensor][rank], flattened), so callers can split the result
  // (allgather's backward, a grouped allgather's tensors) for free.
  for (const auto& rows : response.rows_by_rank) {
    result.received_splits.insert(result.received_splits.end(), rows.begin(), rows.end());
  }
}

}  // namespace dist_sync

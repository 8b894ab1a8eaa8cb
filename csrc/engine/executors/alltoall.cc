#include <memory>

#include "collectives/alltoallv.h"
#include "engine/executors/executor.h"

namespace dist_sync {

// Every rank's splits come from negotiation (Response::split_matrix, [sender * size + receiver]).
void execute_alltoall(const ExecutionContext& context, const Response& response,
                      const std::vector<Request*>& locals, OpResult& result) {
  const TensorMeta& tensor = response.requests.front().tensors.front();
  const size_t row_bytes = static_cast<size_t>(tensor.row_elements()) * dtype_size(tensor.dtype);
  const size_t n = static_cast<size_t>(context.comm.size());
  const size_t me = static_cast<size_t>(context.comm.rank());
  std::vector<size_t> send_bytes(n), recv_bytes(n);
  int64_t total_rows = 0;
  for (size_t p = 0; p < n; ++p) {
    send_bytes[p] = static_cast<size_t>(response.split_matrix[me * n + p]) * row_bytes;
    const int64_t rows = response.split_matrix[p * n + me];
    recv_bytes[p] = static_cast<size_t>(rows) * row_bytes;
    result.received_splits.push_back(rows);
    total_rows += rows;
  }
  auto output = std::make_shared<OutputBuffer>(static_cast<size_t>(total_rows) * row_bytes);
  alltoallv(context.comm, locals.front()->inputs.front(), send_bytes, output->data(), recv_bytes,
            op_traits(OpType::kAlltoall).tag);
  result.output = std::move(output);
  result.output_shape = tensor.shape.empty() ? std::vector<int64_t>{total_rows} : tensor.shape;
  result.output_shape[0] = total_rows;
}

}  // namespace dist_sync

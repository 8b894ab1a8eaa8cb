#include "engine/executors/executor.h"

#include <cstring>

#include "common/errors.h"

namespace dist_sync {

Executor executor_for(OpType type) {
  switch (type) {
    case OpType::kAllreduce: return execute_allreduce;
    case OpType::kBroadcast: return execute_broadcast;
    case OpType::kAllgather: return execute_allgather;
    case OpType::kAlltoall: return execute_alltoall;
    case OpType::kReducescatter: return execute_reducescatter;
    case OpType::kBarrier: return execute_barrier;
    case OpType::kJoin: return execute_join;
  }
  DS_ASSERT(false, "no executor for op type ", static_cast<int>(type));
  return nullptr;
}

std::byte* ZeroBuffer::get(size_t bytes) {
  if (capacity_ < bytes) {
    data_ = allocate_host(bytes);
    capacity_ = bytes;
  }
  std::memset(data_.get(), 0, bytes);
  return data_.get();
}

Scaling scaling_of(const RequestMeta& meta, int size) {
  return Scaling{meta.prescale, meta.postscale,
                 meta.reduce_op == ReduceOp::kAverage ? int64_t{size} : int64_t{1}};
}

size_t joined_bytes(const Response& response, const std::vector<Request*>& locals) {
  size_t bytes = 0;
  for (size_t i = 0; i < locals.size(); ++i) {
    if (locals[i] == nullptr) bytes += response.requests[i].total_bytes();
  }
  return bytes;
}

}  // namespace dist_sync

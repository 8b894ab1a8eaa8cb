// One executor per op type: runs a response every rank agreed on (negotiation is done) on this
// rank's memory, through the collective algorithms. Registered by op type in executor.cc.
#pragma once

#include <cstddef>
#include <vector>

#include "collectives/config.h"
#include "collectives/phase_log.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "common/host_buffer.h"
#include "engine/handles.h"
#include "engine/request.h"
#include "reduce/reduce.h"

namespace dist_sync {

// Zero-filled memory standing in for the tensors of a rank that has joined (it has none of its
// own). Grows to the largest request, never shrinks.
class ZeroBuffer {
 public:
  // `bytes` zero bytes, valid until the next call.
  std::byte* get(size_t bytes);

 private:
  HostBuffer data_;
  size_t capacity_ = 0;
};

// What an executor works with; all of it is the engine's and outlives the call.
struct ExecutionContext {
  Communicator& comm;
  // The ranks on this host and the ranks with this rank's local rank (one per host); both set
  // only while the hierarchical allreduce is enabled and usable (Note [Hierarchical allreduce]).
  Communicator* local;
  Communicator* cross;
  const CollectiveConfig& collectives;
  Workspace& workspace;
  ZeroBuffer& zeros;
  PhaseLog* phases;  // where the timeline wants the collective's phases; null when it does not
};

// locals[i] is this rank's request for response.requests[i], or null where this rank has joined
// (it takes part with zeros, or with nothing). A result the engine allocates
// (OpTraits::engine_allocates_output) and anything else the caller gets back go into `result`.
using ExecutorFunction = void(const ExecutionContext& context, const Response& response,
                              const std::vector<Request*>& locals, OpResult& result);
using Executor = ExecutorFunction*;

Executor executor_for(OpType type);

// The executors, one file each in this directory.
ExecutorFunction execute_allreduce, execute_broadcast, execute_allgather, execute_alltoall,
    execute_reducescatter, execute_barrier, execute_join;

// For the executors that reduce: Average is Sum divided by the number of ranks (joined ranks
// included: they contribute zeros), and the user's prescale/postscale.
Scaling scaling_of(const RequestMeta& meta, int size);

// Bytes of the requests this rank has no tensors for (it has joined).
size_t joined_bytes(const Response& response, const std::vector<Request*>& locals);

}  // namespace dist_sync

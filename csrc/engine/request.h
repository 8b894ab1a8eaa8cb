// What a rank asks the engine to do (Request), what all ranks agree to do (Response), and the
// metadata that must match across ranks (RequestMeta).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "engine/handles.h"
#include "engine/op_traits.h"

namespace dist_sync {

// The device a tensor lives on, as the framework layer reports it. The engine reduces host
// memory only; a device tensor is staged by the framework layer (Note [Host staging] in
// dist_sync/torch). The kind is still negotiated so CPU-on-one-rank, CUDA-on-another fails.
enum class DeviceKind : int32_t { kCpu = 0, kCuda = 1 };
constexpr int kNumDeviceKinds = 2;
inline bool is_device_kind(int32_t raw) { return raw >= 0 && raw < kNumDeviceKinds; }

std::string device_kind_name(DeviceKind device);

struct TensorMeta {
  std::string name;
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> shape;

  int64_t elements() const;
  size_t bytes() const;
  // Elements per row of the first dimension (1 for scalars).
  int64_t row_elements() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
};

// Everything about a request that every rank must agree on. Compared field by field by the
// coordinator; the response cache keys on it too.
struct RequestMeta {
  OpType type = OpType::kAllreduce;
  std::string name;  // the negotiation key
  std::vector<TensorMeta> tensors;
  ReduceOp reduce_op = ReduceOp::kSum;
  double prescale = 1.0;
  double postscale = 1.0;
  int32_t root = 0;
  DeviceKind device = DeviceKind::kCpu;
  bool cacheable = true;             // false for auto-named ops, whose names never repeat
  std::vector<int64_t> splits;       // alltoall: rows this rank sends to each rank

  bool same_signature(const RequestMeta& other) const;
  size_t total_bytes() const;
};

// A request as the submitting rank holds it: metadata plus the memory it refers to.
struct Request {
  uint64_t handle = 0;
  RequestMeta meta;
  std::vector<const void*> inputs;  // one per tensor
  std::vector<void*> outputs;       // one per tensor (allreduce, broadcast); else unused
  std::chrono::steady_clock::time_point submitted;
  std::chrono::steady_clock::time_point taken;  // when the engine thread picked it up
  // Optional: receives the result instead of a waiter (Note [Completion callbacks]).
  CompletionCallback on_complete;
};

// One unit of work every rank executes in the same order.
struct Response {
  OpType type = OpType::kAllreduce;
  std::vector<RequestMeta> requests;  // fused requests (several only for allreduce)
  std::string error;                  // non-empty: fail these requests on every rank
  // Allgather: rows contributed by each rank, per tensor ([tensor][rank]).
  std::vector<std::vector<int64_t>> rows_by_rank;
  // Alltoall: rows sent by each rank to each rank ([sender * size + receiver]).
  std::vector<int64_t> split_matrix;
  int32_t last_joined = -1;  // join: the rank that joined last

  size_t total_bytes() const;
};

struct ResponseList {
  std::vector<Response> responses;
  std::string fatal_error;   // non-empty: every rank fails everything and the job ends
  bool shutdown = false;     // every rank stops after this cycle
  std::string shutdown_reason;
};

}  // namespace dist_sync

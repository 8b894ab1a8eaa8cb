// Completion state of submitted operations, shared between the engine thread (which completes
// them) and Python threads (which poll and wait, without the GIL).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/host_buffer.h"

namespace dist_sync {

// Memory the engine allocates for results whose size only negotiation reveals (allgather,
// alltoall, reducescatter). Ownership passes to Python with the result.
class OutputBuffer {
 public:
  OutputBuffer() = default;
  explicit OutputBuffer(size_t bytes);
  std::byte* data() const { return data_.get(); }
  size_t bytes() const { return bytes_; }

 private:
  HostBuffer data_;
  size_t bytes_ = 0;
};

// Where the engine decided that an operation fails: bindings map it to their own error types
// (the TensorFlow kernels to a status code) without reading the message.
enum class ErrorKind : int32_t {
  kNone = 0,
  kMismatch = 1,  // negotiation: ranks disagree (dtype, shape, op, root, ...) or cannot run it
  kInvalid = 2,   // refused at submission: a bad argument
  kFatal = 3,     // a lost peer, a stall past its deadline: the engine stopped with an error
  kShutdown = 4,  // the engine was shut down (or never started) while the operation was pending
};

struct OpResult {
  std::string error;  // empty: success
  ErrorKind error_kind = ErrorKind::kNone;
  std::shared_ptr<OutputBuffer> output;
  std::vector<int64_t> output_shape;
  std::vector<int64_t> received_splits;  // alltoall
  int32_t join_rank = -1;                // join
};

// Called once, on the engine thread, with an operation's result instead of keeping it for a
// waiter (Note [Completion callbacks]). Must be quick and must not throw.
using CompletionCallback = std::function<void(OpResult&&)>;

class HandleTable {
 public:
  // With `on_complete`, the handle is never waited on: complete() hands the result to it.
  uint64_t create(CompletionCallback on_complete = nullptr);
  void complete(uint64_t handle, OpResult result);
  // Completes several handles under one lock with one wake-up of the waiters (the requests of
  // one fused response finish together).
  void complete(std::vector<std::pair<uint64_t, OpResult>> done);
  // True once complete. Throws UsageError for an unknown handle.
  bool poll(uint64_t handle);
  // Blocks until complete, then forgets the handle. Throws UsageError for an unknown handle.
  OpResult wait(uint64_t handle);
  // Like wait(), but gives up after `timeout` (nullopt; the handle stays), so a caller can do
  // something between slices (Python checks for Ctrl-C).
  std::optional<OpResult> wait_for(uint64_t handle, std::chrono::steady_clock::duration timeout);

 private:
  struct Slot {
    bool done = false;
    OpResult result;
    CompletionCallback on_complete;
  };
  std::shared_ptr<Slot> find(uint64_t handle);

  std::mutex mutex_;
  std::condition_variable completed_;
  uint64_t next_handle_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Slot>> slots_;
};

}  // namespace dist_sync

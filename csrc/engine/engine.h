// The background engine: one thread per process, the only one that talks to the communicator.
// queue -> negotiate (Note [Negotiation cycle]) -> fuse -> execute -> complete.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "collectives/phase_log.h"
#include "collectives/workspace.h"
#include "comm/communicator.h"
#include "engine/config.h"
#include "engine/coordinator.h"
#include "engine/executors/executor.h"
#include "engine/handles.h"
#include "engine/in_flight.h"
#include "engine/request.h"
#include "engine/response_cache.h"
#include "engine/timeline.h"

namespace dist_sync {

class Engine {
 public:
  using Clock = std::chrono::steady_clock;
  // Called on the engine thread when a fatal error was not followed by the process exiting
  // within the grace period: it must end the job (MPI_Abort for the MPI communicator).
  using AbortJob = std::function<void()>;

  // Every rank agrees on `shared_settings` before anything else (Note [Settings every rank must
  // share]). `local` and `cross` (the ranks on this host; one rank per host) may be null; they
  // are used for the hierarchical allreduce when it is enabled.
  Engine(const EngineConfig& config, std::vector<SharedSetting> shared_settings,
         std::unique_ptr<Communicator> comm, AbortJob abort_job,
         std::unique_ptr<Communicator> local = nullptr, std::unique_ptr<Communicator> cross = nullptr,
         std::string process_set_label = "");
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Thread-safe. Takes the request, returns its handle. Throws UsageError for a name already in
  // flight, Error if the engine has stopped.
  uint64_t submit(Request request);
  bool poll(uint64_t handle) { return handles_.poll(handle); }
  // Blocks (call without the GIL) until the operation completes; forgets the handle.
  OpResult wait(uint64_t handle) { return handles_.wait(handle); }
  std::optional<OpResult> wait_for(uint64_t handle, Clock::duration timeout) {
    return handles_.wait_for(handle, timeout);
  }

  // Collective: this rank's engine asks every rank's engine to stop after the current cycle, and
  // waits for its own thread. Pending operations anywhere fail with a message naming this rank.
  void shutdown(const std::string& reason = "");
  bool running() const;
  // Makes every rank's pending and future calls on this engine's communicators fail at once
  // (Note [Surviving a lost rank] in comm/mpi_comm.h); any thread.
  void revoke_communicators();
  // Why the engine stopped (empty while running).
  std::string stop_reason() const;
  bool failed() const;

  Timeline& timeline() { return timeline_; }

  // Counters for tests and diagnostics (monotonic since start).
  struct Stats {
    std::atomic<uint64_t> cycles{0};
    std::atomic<uint64_t> full_rounds{0};    // cycles that needed the coordinator
    std::atomic<uint64_t> executions{0};     // responses executed (one per fused pass)
    std::atomic<uint64_t> requests{0};       // requests completed
    std::atomic<uint64_t> cache_hits{0};     // requests answered by the response cache
  };
  const Stats& stats() const { return stats_; }

 private:
  // Lifecycle (engine.cc): the thread's loop, and how it ends.
  void loop();
  void stop(const std::string& reason, bool failed);
  void fatal(const std::string& message);

  // Negotiation (negotiation.cc): Note [Negotiation cycle].
  void agree_on_settings();
  bool cycle();  // false: stop
  void intake();
  ResponseList full_round(bool stall_report, Clock::time_point now);
  std::vector<Response> fuse(std::vector<Response> responses) const;
  void remember(const Response& response);
  void demote(uint32_t bit);

  // Execution (execution.cc): an executor per op type (engine/executors/).
  void execute(const Response& response);
  void record_timeline(const Response& response, const std::vector<Request*>& locals,
                       Clock::time_point started, const PhaseLog& phases);
  void finish(const std::string& name, OpResult result);
  // Every local request of `response` (locals[i], null on a joined rank) ends with `result`:
  // one lock for the memory-in-flight registry and one wake-up of the waiters for all of them.
  void finish_response(const Response& response, const std::vector<Request*>& locals,
                       OpResult result);

  EngineConfig config_;  // settings every rank must share are replaced by rank 0's at start
  const std::vector<SharedSetting> shared_settings_;
  const std::unique_ptr<Communicator> comm_;
  const std::unique_ptr<Communicator> local_comm_;
  const std::unique_ptr<Communicator> cross_comm_;
  const AbortJob abort_job_;
  const int rank_;
  const int size_;
  WaitConfig data_wait_;
  WaitConfig negotiation_wait_;
  WaitConfig idle_negotiation_wait_;
  std::atomic<bool> abort_waits_{false};
  HandleTable handles_;
  Timeline timeline_;
  Stats stats_;

  // Empty for the global process set; otherwise how errors name this engine's process set
  // (Note [One engine per process set]).
  const std::string process_set_label_;

  // Shared with submitting threads, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;
  InFlight in_flight_;  // Note [Memory in flight]
  bool shutdown_requested_ = false;
  std::string shutdown_reason_;
  bool stopped_ = false;
  bool failed_ = false;
  std::string stop_reason_;

  // Engine thread only.
  std::unordered_map<std::string, Request> pending_;
  std::map<uint32_t, std::string> cached_pending_;  // cache bit -> name
  std::vector<std::string> uncached_to_send_;
  std::vector<uint32_t> invalid_bits_;
  bool joined_ = false;
  bool hierarchical_usable_ = false;  // enabled, and every host has the same number (> 1) of ranks
  size_t completed_ = 0;
  ResponseCache cache_;
  std::unique_ptr<Coordinator> coordinator_;
  Workspace workspace_;
  ZeroBuffer zeros_;

  std::thread thread_;
};

}  // namespace dist_sync

// The engine's lifecycle: construction, submission, the thread's loop, shutdown, stop and fatal
// errors. Negotiation is in negotiation.cc, execution in execution.cc.
#include "engine/engine.h"

#include <sys/prctl.h>

#include <algorithm>

#include "collectives/adasum.h"
#include "common/errors.h"
#include "common/logging.h"
#include "common/termination_report.h"

namespace dist_sync {
namespace {

// Longest sleep between polls while this rank has work pending (Note [Cycle timing]).
constexpr std::chrono::microseconds kBusyPoll{200};

}  // namespace

Engine::Engine(const EngineConfig& config, std::vector<SharedSetting> shared_settings,
               std::unique_ptr<Communicator> comm, AbortJob abort_job,
               std::unique_ptr<Communicator> local, std::unique_ptr<Communicator> cross,
               std::string process_set_label)
    : config_(config),
      shared_settings_(std::move(shared_settings)),
      comm_(std::move(comm)),
      local_comm_(std::move(local)),
      cross_comm_(std::move(cross)),
      abort_job_(std::move(abort_job)),
      rank_(comm_->rank()),
      size_(comm_->size()),
      process_set_label_(std::move(process_set_label)),
      cache_(config.cache_capacity) {
  if (process_set_label_.empty()) {  // the global set's engine speaks for the process
    set_log_level(config.log_level);
    set_log_rank(rank_);
  }
  const auto timeout = std::chrono::seconds(static_cast<int64_t>(config.stall_timeout_seconds));
  data_wait_.timeout = timeout;
  data_wait_.abort = &abort_waits_;
  // Note [Cycle timing]
  // A rank with work pending polls for its peers in short sleeps (at most kBusyPoll), so a late
  // rank's arrival is noticed within ~0.2 ms whatever the cycle time. A rank with nothing
  // pending sleeps through its cycle time and then polls without spinning: the cycle time only
  // bounds how soon an idle engine takes part in a negotiation it has nothing for, and sets
  // what idling costs.
  negotiation_wait_ = data_wait_;
  negotiation_wait_.spin = std::chrono::microseconds(20);
  negotiation_wait_.yield = std::chrono::microseconds(0);
  negotiation_wait_.max_sleep = kBusyPoll;
  idle_negotiation_wait_ = negotiation_wait_;
  idle_negotiation_wait_.spin = std::chrono::microseconds(0);
  idle_negotiation_wait_.max_sleep = kBusyPoll;  // a submission may arrive mid-wait
  for (Communicator* c : {local_comm_.get(), cross_comm_.get()}) {
    if (c != nullptr) c->set_wait_config(data_wait_);
  }
  if (rank_ == 0) coordinator_ = std::make_unique<Coordinator>(size_, config_);
  if (rank_ == 0 && !config.timeline_path.empty()) timeline_.start(config.timeline_path);
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  shutdown();
  timeline_.stop();
}

uint64_t Engine::submit(Request request) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopped_) throw Error("dist_sync has stopped: " + stop_reason_);
  if (shutdown_requested_) throw Error("dist_sync is shutting down (shutdown() was called)");
  const std::string& name = request.meta.name;
  if (op_traits(request.meta.type).reduces && request.meta.reduce_op == ReduceOp::kAdasum) {
    DS_CHECK(request.meta.type == OpType::kAllreduce, "Adasum is an allreduce op; ",
             op_type_name(request.meta.type), " '", name, "' takes Average, Sum, Min, Max or Product");
    for (const TensorMeta& tensor : request.meta.tensors) {
      const std::string unsupported = adasum_unsupported(size_, tensor.dtype);
      DS_CHECK(unsupported.empty(), "'", tensor.name.empty() ? name : tensor.name, "': ", unsupported);
    }
  }
  in_flight_.check(request, rank_);
  request.handle = handles_.create(std::move(request.on_complete));
  request.submitted = Clock::now();
  const uint64_t handle = request.handle;
  in_flight_.add(request);
  // The engine takes the whole queue at once: only the first submission into an empty queue
  // needs to wake it (the rest of a burst would only add futex calls).
  const bool wake = queue_.empty();
  queue_.push_back(std::move(request));
  lock.unlock();
  if (wake) wake_.notify_one();
  return handle;
}

void Engine::shutdown(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!shutdown_requested_) shutdown_reason_ = reason;
    shutdown_requested_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

void Engine::revoke_communicators() {
  for (Communicator* c : {comm_.get(), local_comm_.get(), cross_comm_.get()}) {
    if (c != nullptr) c->revoke();
  }
}

bool Engine::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !stopped_;
}

std::string Engine::stop_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stop_reason_;
}

bool Engine::failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failed_;
}

void Engine::loop() {
  // Wake-ups within ~10 us of the requested time (the default slack is 50 us): idle ranks stay
  // in step and the cycle's short sleeps mean what they say.
  prctl(PR_SET_TIMERSLACK, 10000UL, 0, 0, 0);
  try {
    agree_on_settings();
    // Idle waits are measured from the end of the previous cycle: the cycle's allreduce ends at
    // nearly the same moment on every rank, so idle ranks wake together and a cycle costs one
    // quick exchange instead of the earliest rank polling for the latest one.
    auto cycle_end = Clock::now() - config_.cycle_time();
    std::chrono::microseconds backoff{0};
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        // With local work pending, cycle again at once (or soon, if the last cycle made no
        // progress); otherwise once per cycle time, or as soon as something is submitted.
        const auto wait = pending_.empty() ? config_.cycle_time() : backoff;
        wake_.wait_until(lock, cycle_end + wait,
                         [this] { return !queue_.empty() || shutdown_requested_; });
      }
      const size_t completed_before = completed_;
      if (!cycle()) break;
      cycle_end = Clock::now();
      // No progress although work is pending: the matching submissions are late somewhere.
      // Back off (a little) so ranks with disjoint pending work don't spin on empty cycles.
      if (completed_ != completed_before) {
        backoff = std::chrono::microseconds(0);
      } else {
        backoff = std::min(kBusyPoll, backoff.count() == 0 ? std::chrono::microseconds(20) : backoff * 2);
      }
    }
  } catch (const std::exception& error) {
    fatal(error.what());
  }
}

void Engine::stop(const std::string& reason, bool failed) {
  // Note [Saying why mpirun ended a rank]: a process set's engine stops when the set is removed,
  // which says nothing about why the process ends; only its failures do.
  if (process_set_label_.empty() || failed) record_termination_reason(reason);
  std::deque<Request> queued;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    failed_ = failed;
    stop_reason_ = reason;
    queued.swap(queue_);
  }
  for (Request& request : queued) pending_.emplace(request.meta.name, std::move(request));
  std::vector<std::string> names;
  for (const auto& entry : pending_) names.push_back(entry.first);
  for (const std::string& name : names) {
    OpResult result;
    result.error = detail::concat(reason, " (while '", name, "' was pending on rank ", rank_, ")");
    result.error_kind = failed ? ErrorKind::kFatal : ErrorKind::kShutdown;
    finish(name, std::move(result));
  }
  cached_pending_.clear();
  uncached_to_send_.clear();
}

void Engine::fatal(const std::string& message) {
  log_message(LogLevel::kError, message);
  abort_waits_.store(true);
  stop(message, true);
  timeline_.stop();
  // Give the Python side time to raise the error and exit by itself (its shutdown() wakes us);
  // if it doesn't, end the job rather than leave ranks hanging.
  std::unique_lock<std::mutex> lock(mutex_);
  const bool exited = wake_.wait_for(
      lock, std::chrono::duration<double>(config_.fatal_grace_seconds),
      [this] { return shutdown_requested_; });
  if (!exited && abort_job_) {
    lock.unlock();
    log_message(LogLevel::kError, "ending the job after the error above");
    abort_job_();
  }
}

}  // namespace dist_sync

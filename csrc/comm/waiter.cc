#include "comm/waiter.h"

#include <sched.h>

#include <thread>

#include "comm/communicator.h"
#include "common/errors.h"

namespace dist_sync {

Waiter::Waiter(const Communicator& comm, const char* what)
    : comm_(comm), what_(what), wait_start_(Clock::now()), last_peer_check_(wait_start_) {}

void Waiter::progressed() {
  polls_ = 0;
  sleep_ = std::chrono::microseconds(0);
  wait_start_ = Clock::now();
  last_peer_check_ = wait_start_;
}

void Waiter::idle(int peer) {
  const WaitConfig& config = comm_.wait_config();
  if (config.abort != nullptr && config.abort->load(std::memory_order_relaxed)) {
    throw Error(detail::concat("dist_sync is shutting down after a fatal error; abandoned ",
                               what_));
  }
  // Reading the clock costs ~20ns; checking only every 64 polls keeps the spin tight.
  if ((++polls_ & 63u) != 0 && sleep_.count() == 0) return;
  const auto now = Clock::now();
  const auto waited = now - wait_start_;
  if (waited < config.spin) return;
  if (peer >= 0 && now - last_peer_check_ >= config.peer_check) {
    last_peer_check_ = now;
    comm_.check_peer(peer);
  }
  if (config.timeout.count() > 0 && waited >= config.timeout) {
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(waited).count();
    throw TimeoutError(detail::concat(
        "timed out after ", seconds, " s in ", what_,
        peer >= 0 ? " waiting for " + comm_.describe_rank(peer) : std::string(),
        " (DIST_SYNC_STALL_TIMEOUT_SECONDS)"));
  }
  if (waited < config.spin + config.yield) {
    sched_yield();
    return;
  }
  sleep_ = sleep_.count() == 0 ? std::chrono::microseconds(20) : sleep_ * 2;
  if (sleep_ > config.max_sleep) sleep_ = config.max_sleep;
  std::this_thread::sleep_for(sleep_);
}

}  // namespace dist_sync

// How the engine waits for peers without burning a core.
//
// Note [Waiting costs no core]
// Blocking MPI calls spin on most implementations; an engine idling inside one burns a whole
// core per rank. Every wait here is a loop of non-blocking tests and Waiter::idle(): a short
// spin (the common case: the peer is a few microseconds away), then sched_yield (cheap when
// ranks outnumber cores), then sleeps that double up to max_sleep. Long waits also ask the
// communicator whether the awaited peer is still alive, and give up after the stall timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

namespace dist_sync {

class Communicator;

struct WaitConfig {
  std::chrono::microseconds spin{50};           // busy polling before yielding
  std::chrono::microseconds yield{1000};        // sched_yield polling before sleeping
  std::chrono::microseconds max_sleep{1000};    // longest single sleep between polls
  std::chrono::milliseconds peer_check{1000};   // how often a long wait checks the peer is alive
  std::chrono::seconds timeout{0};              // 0: wait forever
  // Set from another thread (or a signal handler) to make every wait throw promptly.
  const std::atomic<bool>* abort = nullptr;
};

class Waiter {
 public:
  Waiter(const Communicator& comm, const char* what);
  // Call when a poll made no progress. `peer` is the rank being waited for (-1: several).
  // Throws TimeoutError past the timeout, CommError if the peer is gone, Error on abort.
  void idle(int peer);
  // Call when a poll made progress: the next idle() starts spinning again.
  void progressed();

 private:
  using Clock = std::chrono::steady_clock;
  const Communicator& comm_;
  const char* what_;
  Clock::time_point wait_start_;
  Clock::time_point last_peer_check_;
  std::chrono::microseconds sleep_{0};
  unsigned polls_ = 0;
};

}  // namespace dist_sync

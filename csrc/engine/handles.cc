#include "engine/handles.h"

#include <chrono>
#include <new>
#include <thread>

#include "common/errors.h"

namespace dist_sync {

OutputBuffer::OutputBuffer(size_t bytes) : data_(allocate_host(bytes)), bytes_(bytes) {}

// Note [Completion callbacks]
// A binding that must not block a thread per operation (the TensorFlow kernels: an asynchronous
// kernel returns at once and reports when done) gives its handle a callback instead of waiting on
// it. The slot is removed when the operation completes and the callback runs on the completing
// thread (the engine's, or the one stopping the engine) after the table's lock is released, so a
// callback may submit further operations. It only hands the result over; the engine's thread
// must not do the binding's work.
uint64_t HandleTable::create(CompletionCallback on_complete) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t handle = next_handle_++;
  auto slot = std::make_shared<Slot>();
  slot->on_complete = std::move(on_complete);
  slots_.emplace(handle, std::move(slot));
  return handle;
}

void HandleTable::complete(uint64_t handle, OpResult result) {
  std::vector<std::pair<uint64_t, OpResult>> done;
  done.emplace_back(handle, std::move(result));
  complete(std::move(done));
}

void HandleTable::complete(std::vector<std::pair<uint64_t, OpResult>> done) {
  if (done.empty()) return;
  std::vector<std::pair<CompletionCallback, OpResult>> callbacks;
  bool waiters = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [handle, result] : done) {
      const auto it = slots_.find(handle);
      if (it == slots_.end()) continue;
      if (it->second->on_complete) {
        callbacks.emplace_back(std::move(it->second->on_complete), std::move(result));
        slots_.erase(it);
        continue;
      }
      it->second->result = std::move(result);
      it->second->done = true;
      waiters = true;
    }
  }
  if (waiters) completed_.notify_all();
  for (auto& [callback, result] : callbacks) callback(std::move(result));
}

std::shared_ptr<HandleTable::Slot> HandleTable::find(uint64_t handle) {
  const auto it = slots_.find(handle);
  if (it == slots_.end()) {
    throw UsageError(detail::concat(
        "unknown handle ", handle,
        ": it was already synchronized, or it belongs to another dist_sync session"));
  }
  return it->second;
}

bool HandleTable::poll(uint64_t handle) {
  std::lock_guard<std::mutex> lock(mutex_);
  return find(handle)->done;
}

OpResult HandleTable::wait(uint64_t handle) {
  std::optional<OpResult> result;
  while (!result) result = wait_for(handle, std::chrono::hours(1));
  return std::move(*result);
}

std::optional<OpResult> HandleTable::wait_for(uint64_t handle,
                                              std::chrono::steady_clock::duration timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  const std::shared_ptr<Slot> slot = find(handle);
  if (!slot->done) {
    // A short spin first: a small op usually completes within microseconds, and a condition
    // variable wake-up costs more than that.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(30);
    while (!slot->done && std::chrono::steady_clock::now() < spin_until) {
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    }
    if (!completed_.wait_for(lock, timeout, [&] { return slot->done; })) return std::nullopt;
  }
  OpResult result = std::move(slot->result);
  slots_.erase(handle);
  return result;
}

}  // namespace dist_sync

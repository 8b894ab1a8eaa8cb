// Chrome-trace / Perfetto timeline of what the engine did with each tensor (rank 0 only).
//
// Note [Timeline stays valid JSON]
// The file is a JSON array of trace events. After every batch of events the writer seeks back
// over the closing bracket, appends, and writes the bracket again, so the file on disk is valid
// JSON at every flush: a job that is killed leaves a loadable trace.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>

namespace dist_sync {

class Timeline {
 public:
  using Clock = std::chrono::steady_clock;

  ~Timeline();
  // Starts writing to `path` (replacing it). Throws Error if it cannot be opened.
  void start(const std::string& path);
  void stop();
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  // One complete event on the tensor's row. `args` is a JSON object body ("\"k\": 1") or empty.
  void span(const std::string& tensor, const std::string& phase, Clock::time_point begin,
            Clock::time_point end, const std::string& args = "");

 private:
  int row_of(const std::string& tensor);
  void append(const std::string& event);
  void flush_locked();

  std::mutex mutex_;
  std::atomic<bool> enabled_{false};  // read by the engine thread without the lock
  std::FILE* file_ = nullptr;
  bool first_event_ = true;
  std::string buffer_;
  Clock::time_point origin_;
  Clock::time_point last_flush_;
  std::unordered_map<std::string, int> rows_;
};

std::string json_escape(const std::string& text);

}  // namespace dist_sync

// Where a collective spent its time, for the timeline: each entry marks the end of a phase.
#pragma once

#include <chrono>
#include <utility>
#include <vector>

namespace dist_sync {

struct PhaseLog {
  using Clock = std::chrono::steady_clock;
  std::vector<std::pair<const char*, Clock::time_point>> ends;

  void end(const char* phase) { ends.emplace_back(phase, Clock::now()); }
};

// Marks a phase end if there is a log to mark it in.
inline void end_phase(PhaseLog* log, const char* phase) {
  if (log != nullptr) log->end(phase);
}

}  // namespace dist_sync

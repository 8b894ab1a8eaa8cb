// Engine settings. Filled from DIST_SYNC_* variables (and init() keywords) by dist_sync/config.py,
// the one place that reads them; the defaults there are the documented ones.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "collectives/config.h"
#include "common/logging.h"

namespace dist_sync {

struct EngineConfig {
  CollectiveConfig collectives;
  size_t fusion_threshold_bytes = size_t{64} << 20;  // 0 disables fusion
  std::chrono::microseconds cycle_time{5000};
  size_t cache_capacity = 1024;                      // 0 disables the response cache
  double stall_warning_seconds = 60.0;
  double stall_timeout_seconds = 1800.0;             // 0: never
  double fatal_grace_seconds = 10.0;  // after a fatal error, time for Python to exit by itself
  bool hierarchical_allreduce = false;  // Note [Hierarchical allreduce]
  LogLevel log_level = LogLevel::kWarning;
  std::string timeline_path;          // empty: no timeline
};

}  // namespace dist_sync

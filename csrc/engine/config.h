// Engine settings. dist_sync/config.py declares every setting once (name, default, parsing,
// help) and hands the engine the complete resolved dict; nothing here restates a default, and a
// missing setting is an error.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "collectives/config.h"
#include "common/logging.h"

namespace dist_sync {

struct EngineConfig {
  CollectiveConfig collectives;
  size_t fusion_threshold_bytes;  // 0 disables fusion
  double cycle_time_ms;
  size_t cache_capacity;          // 0 disables the response cache
  double stall_warning_seconds;
  double stall_timeout_seconds;   // 0: never
  double init_timeout_seconds;    // how long init() waits for every rank to call it; 0: never
  double fatal_grace_seconds;     // after a fatal error, time for Python to exit by itself
  bool hierarchical_allreduce;    // Note [Hierarchical allreduce]
  LogLevel log_level;
  std::string timeline_path;      // empty: no timeline

  std::chrono::microseconds cycle_time() const {
    return std::chrono::microseconds(static_cast<int64_t>(cycle_time_ms * 1000.0));
  }
};

// One engine setting: its key in dist_sync/config.py's SETTINGS and the field it fills. Values
// travel as text (integers in decimal; reals with 17 significant digits, an exact round trip;
// booleans as 1 or 0): the bindings fill a config through set(), and ranks compare the settings
// they must share through get() (Note [Settings every rank must share]).
struct SettingField {
  enum class Kind { kUnsigned, kInteger, kReal, kBoolean, kText };
  const char* key;
  Kind kind;
  std::function<std::string(const EngineConfig&)> get;
  std::function<void(EngineConfig&, const std::string&)> set;  // UsageError for malformed text
};

// Every field of EngineConfig, each once.
const std::vector<SettingField>& setting_fields();
// The field of `key`; UsageError naming the known keys if there is none.
const SettingField& setting_field(const std::string& key);

// A setting every rank must share: its key, the DIST_SYNC_ variable a warning names, and (once
// agreed) rank 0's value as text.
struct SharedSetting {
  std::string key;
  std::string variable;
  std::string value;
};

}  // namespace dist_sync

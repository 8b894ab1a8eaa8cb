// Minimal leveled logging to stderr, prefixed with the rank. The engine thread never holds the
// GIL, so it cannot use Python's logging; messages carry "dist_sync" so users can grep them.
#pragma once

#include <string>

namespace dist_sync {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

void set_log_level(LogLevel level);
void set_log_rank(int rank);
bool log_enabled(LogLevel level);
void log_message(LogLevel level, const std::string& message);

}  // namespace dist_sync

// Rank 0's half of negotiation: collects requests that missed the response cache, decides
// which are ready on every rank, checks that ranks agree on them, and times stalls.
//
// Note [Negotiation cycle]
// Each engine cycle, every rank contributes one bit vector: flags, cache hits (AND), cache hits
// (OR) and cache invalidations (OR), combined in one small allreduce. Cached requests whose bit
// is set everywhere execute at once. Only if some rank has a request the cache could not answer
// (or the coordinator asks for a stall report, or a rank is shutting down) is there a full
// round: every rank sends its new requests to rank 0, which answers with the list of responses
// every rank then executes in the same order.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/config.h"
#include "engine/request.h"
#include "engine/response_cache.h"
#include "engine/wire.h"

namespace dist_sync {

class Coordinator {
 public:
  using Clock = std::chrono::steady_clock;

  Coordinator(int size, const EngineConfig& config);

  // Every cycle: the cached requests ready everywhere and submitted somewhere, for stall timing.
  void observe_cache_bits(const std::vector<uint64_t>& ready, const std::vector<uint64_t>& submitted,
                          Clock::time_point now);
  // Whether rank 0 should force a full round this cycle to inspect stalls.
  bool wants_stall_report(Clock::time_point now) const;

  ResponseList full_round(const std::vector<RankMessage>& messages, const ResponseCache& cache,
                          Clock::time_point now);

 private:
  struct Pending {
    std::vector<std::optional<RequestMeta>> by_rank;
    Clock::time_point first_seen;
  };
  struct StallClock {
    Clock::time_point first_seen;
    Clock::time_point last_warned;
    bool warned = false;
  };

  bool is_ready(const Pending& pending) const;
  Response make_response(const std::string& name, const Pending& pending) const;
  std::string inspect_stalls(const std::vector<RankMessage>& messages, const ResponseCache& cache,
                             Clock::time_point now);

  const int size_;
  const double warning_seconds_;
  const double timeout_seconds_;
  std::unordered_map<std::string, Pending> table_;
  std::vector<std::string> arrival_order_;
  std::vector<bool> joined_;
  int last_joined_ = -1;
  // Cached requests submitted by some ranks but not all, by bit.
  std::map<uint32_t, StallClock> partial_cached_;
  std::unordered_map<std::string, StallClock> stall_clocks_;
  Clock::time_point next_stall_check_;
};

}  // namespace dist_sync

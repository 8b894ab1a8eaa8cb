// Byte encoding of negotiation messages. Both ends are the same build of dist_sync, so the
// format is a plain little-endian field sequence; the reader still checks every length, so a
// corrupt message fails with an error rather than reading out of bounds.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/config.h"
#include "engine/request.h"

namespace dist_sync {

// What a rank sends the coordinator in a full negotiation round.
struct RankMessage {
  std::vector<RequestMeta> requests;          // requests not answered from the cache
  bool shutdown = false;                      // this rank asked to shut down
  std::string shutdown_reason;                // why (e.g. the uncaught exception), may be empty
  bool stall_report = false;                  // the fields below are filled
  std::vector<uint32_t> pending_cache_bits;   // cached requests this rank has pending
};

std::vector<uint8_t> encode(const RankMessage& message);
RankMessage decode_rank_message(const std::vector<uint8_t>& bytes);

std::vector<uint8_t> encode(const ResponseList& list);
ResponseList decode_response_list(const std::vector<uint8_t>& bytes);

// Rank 0's shared settings, sent to every rank at start (Note [Settings every rank must share]).
std::vector<uint8_t> encode(const std::vector<SharedSetting>& settings);
std::vector<SharedSetting> decode_shared_settings(const std::vector<uint8_t>& bytes);

}  // namespace dist_sync

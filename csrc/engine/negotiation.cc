// Negotiation (Note [Negotiation cycle]): the settings every rank must share, then each cycle's
// intake, bit-vector allreduce, full round with the coordinator, fusion and response cache.
#include <algorithm>

#include "collectives/recursive_doubling.h"
#include "common/errors.h"
#include "common/logging.h"
#include "engine/byte_messages.h"
#include "engine/engine.h"
#include "engine/wire.h"

namespace dist_sync {
namespace {

// Bits of the flags word of the cycle's allreduce (combined with OR; Note [Negotiation cycle]).
constexpr uint64_t kFlagUncached = 1u << 0;   // some rank has requests the cache can't answer
constexpr uint64_t kFlagShutdown = 1u << 1;   // some rank is shutting down
constexpr uint64_t kFlagStallReport = 1u << 2;  // the coordinator wants to inspect stalls

bool is_cacheable(const RequestMeta& meta) {
  return meta.cacheable && op_traits(meta.type).cacheable;
}

void set_bit(uint64_t* words, uint32_t bit) { words[bit / 64] |= uint64_t{1} << (bit % 64); }

template <typename Fn>
void for_each_bit(const uint64_t* words, size_t count, Fn&& fn) {
  for (size_t w = 0; w < count; ++w) {
    uint64_t word = words[w];
    while (word != 0) {
      fn(static_cast<uint32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(word))));
      word &= word - 1;
    }
  }
}

// The single dtype of a request, or nullopt if its tensors mix dtypes.
bool single_dtype(const RequestMeta& meta, DataType* dtype) {
  if (meta.tensors.empty()) return false;
  *dtype = meta.tensors.front().dtype;
  for (const TensorMeta& t : meta.tensors) {
    if (t.dtype != *dtype) return false;
  }
  return true;
}

// Whether two responses may share one execution (Note [Fusion without copies]).
bool fusable(const Response& a, const Response& b) {
  if (!a.error.empty() || !b.error.empty() || a.type != b.type) return false;
  const OpTraits& traits = op_traits(a.type);
  if (!traits.fusable) return false;
  const RequestMeta& x = a.requests.front();
  const RequestMeta& y = b.requests.front();
  if (x.device != y.device) return false;
  if (traits.has_root && x.root != y.root) return false;
  if (!traits.reduces) return true;
  DataType dx, dy;
  // Adasum's dot products are per tensor (Note [Adasum]).
  if (x.reduce_op == ReduceOp::kAdasum) return false;
  return single_dtype(x, &dx) && single_dtype(y, &dy) && dx == dy && x.reduce_op == y.reduce_op &&
         x.prescale == y.prescale && x.postscale == y.postscale;
}

}  // namespace

// Note [Settings every rank must share]
// Some settings decide message sizes, algorithms and bit positions (today the segment size, the
// small-message threshold, the fusion threshold, the cache capacity and the hierarchical
// switch); ranks that disagreed would hang or mis-pair messages. dist_sync/config.py marks them
// `shared`, and init() hands their keys to the engine, which agrees on exactly those: rank 0's
// values win, and a rank whose own differ says so, naming the variable.
void Engine::agree_on_settings() {
  comm_->set_wait_config(data_wait_);
  std::vector<SharedSetting> mine = shared_settings_;
  for (SharedSetting& setting : mine) setting.value = setting_field(setting.key).get(config_);
  std::vector<uint8_t> bytes = encode(mine);
  broadcast_bytes(*comm_, bytes, 0, kNegotiationTag);
  for (const SharedSetting& agreed : decode_shared_settings(bytes)) {
    const SettingField& field = setting_field(agreed.key);
    const std::string own = field.get(config_);
    if (own == agreed.value) continue;
    log_message(LogLevel::kWarning, detail::concat(agreed.variable, " is ", own, " on this rank but ",
                                                   agreed.value, " on rank 0; using rank 0's"));
    field.set(config_, agreed.value);
  }
  if (config_.cache_capacity != cache_.capacity()) cache_ = ResponseCache(config_.cache_capacity);
  if (!config_.hierarchical_allreduce) return;
  // The hierarchy needs the same number of ranks on every host: chunk boundaries within a host
  // must line up with the cross-host groups. Decided together, so every rank agrees.
  int64_t extremes[2] = {local_comm_ ? local_comm_->size() : 0, local_comm_ ? -local_comm_->size() : 0};
  int64_t scratch[2];
  recursive_doubling_allreduce(*comm_, extremes, 2, DataType::kInt64, ReduceOp::kMax,
                               reinterpret_cast<std::byte*>(scratch), kNegotiationTag);
  const int64_t largest = extremes[0], smallest = -extremes[1];
  std::string why_not;
  if (smallest != largest) {
    why_not = detail::concat("hosts run different numbers of ranks (", smallest, " to ", largest, ")");
  } else if (largest <= 1 || !cross_comm_ || cross_comm_->size() <= 1) {
    why_not = "there is only one host or one rank per host";
  }
  hierarchical_usable_ = why_not.empty();
  if (rank_ == 0) {
    log_message(hierarchical_usable_ ? LogLevel::kInfo : LogLevel::kWarning,
                hierarchical_usable_ ? std::string("hierarchical allreduce enabled")
                                     : "DIST_SYNC_HIERARCHICAL_ALLREDUCE is set but " + why_not +
                                           "; using the flat ring");
  }
}

void Engine::intake() {
  std::deque<Request> incoming;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    incoming.swap(queue_);
  }
  const auto taken = Clock::now();
  for (Request& request : incoming) {
    request.taken = taken;
    const std::string name = request.meta.name;
    if (request.meta.type == OpType::kJoin) joined_ = true;
    uint32_t bit = 0;
    const auto lookup = is_cacheable(request.meta) ? cache_.lookup(request.meta, &bit)
                                                   : ResponseCache::Lookup::kMiss;
    if (lookup == ResponseCache::Lookup::kHit) {
      cached_pending_[bit] = name;
      stats_.cache_hits.fetch_add(1, std::memory_order_relaxed);
    } else {
      if (lookup == ResponseCache::Lookup::kMismatch) invalid_bits_.push_back(bit);
      uncached_to_send_.push_back(name);
    }
    pending_.emplace(name, std::move(request));
  }
}

bool Engine::cycle() {
  const auto now = Clock::now();
  stats_.cycles.fetch_add(1, std::memory_order_relaxed);
  intake();
  comm_->set_wait_config(pending_.empty() ? idle_negotiation_wait_ : negotiation_wait_);

  // One allreduce of [flags | ready (AND) | submitted (OR) | invalid (OR)]. OR is an AND of
  // complements, so a single bitwise-AND reduction serves all four.
  const size_t words = cache_.words();
  std::vector<uint64_t> state(1 + 3 * words, 0);
  uint64_t* ready = state.data() + 1;
  uint64_t* submitted = ready + words;
  uint64_t* invalid = submitted + words;
  uint64_t flags = 0;
  bool shutting_down;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutting_down = shutdown_requested_;
  }
  if (!uncached_to_send_.empty()) flags |= kFlagUncached;
  if (shutting_down) flags |= kFlagShutdown;
  if (coordinator_ && coordinator_->wants_stall_report(now)) flags |= kFlagStallReport;
  state[0] = ~flags;
  if (joined_) std::fill(ready, ready + words, ~uint64_t{0});
  for (const auto& entry : cached_pending_) {
    set_bit(ready, entry.first);
    set_bit(submitted, entry.first);
  }
  for (const uint32_t bit : invalid_bits_) set_bit(invalid, bit);
  invalid_bits_.clear();
  for (size_t w = 0; w < 2 * words; ++w) submitted[w] = ~submitted[w];
  std::vector<uint64_t> scratch(state.size());
  recursive_doubling_allreduce(*comm_, state.data(), state.size(), DataType::kUInt64,
                               ReduceOp::kBitAnd, reinterpret_cast<std::byte*>(scratch.data()),
                               kNegotiationTag);
  flags = ~state[0];
  for (size_t w = 0; w < 2 * words; ++w) submitted[w] = ~submitted[w];

  for_each_bit(invalid, words, [&](uint32_t bit) {
    demote(bit);
    cache_.erase(bit);
  });
  for (size_t w = 0; w < words; ++w) ready[w] &= submitted[w] & ~invalid[w];
  if (coordinator_) {
    coordinator_->observe_cache_bits(std::vector<uint64_t>(ready, ready + words),
                                     std::vector<uint64_t>(submitted, submitted + words), now);
  }

  std::vector<Response> responses;
  for_each_bit(ready, words, [&](uint32_t bit) {
    if (!cache_.contains(bit)) return;
    Response response;
    response.requests.push_back(cache_.meta(bit));
    response.type = response.requests.front().type;
    responses.push_back(std::move(response));
    cached_pending_.erase(bit);  // committed: an eviction below must not demote it
    cache_.touch(bit);
  });

  if (flags & (kFlagUncached | kFlagShutdown | kFlagStallReport)) {
    ResponseList list = full_round((flags & kFlagStallReport) != 0, now);
    if (!list.fatal_error.empty()) {
      comm_->set_wait_config(data_wait_);
      throw Error(list.fatal_error);
    }
    if (list.shutdown) {
      stop("dist_sync was shut down: " + list.shutdown_reason, false);
      return false;
    }
    for (Response& response : list.responses) responses.push_back(std::move(response));
  }

  comm_->set_wait_config(data_wait_);
  for (const Response& response : fuse(std::move(responses))) execute(response);
  return true;
}

ResponseList Engine::full_round(bool stall_report, Clock::time_point now) {
  stats_.full_rounds.fetch_add(1, std::memory_order_relaxed);
  RankMessage message;
  for (const std::string& name : uncached_to_send_) message.requests.push_back(pending_.at(name).meta);
  uncached_to_send_.clear();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    message.shutdown = shutdown_requested_;
    message.shutdown_reason = shutdown_reason_;
  }
  message.stall_report = stall_report;
  if (stall_report) {
    for (const auto& entry : cached_pending_) message.pending_cache_bits.push_back(entry.first);
  }
  const auto gathered = gather_bytes(*comm_, encode(message), 0, kNegotiationTag);
  std::vector<uint8_t> reply;
  if (coordinator_) {
    std::vector<RankMessage> messages;
    messages.reserve(gathered.size());
    for (const auto& bytes : gathered) messages.push_back(decode_rank_message(bytes));
    reply = encode(coordinator_->full_round(messages, cache_, now));
  }
  broadcast_bytes(*comm_, reply, 0, kNegotiationTag);
  return decode_response_list(reply);
}

std::vector<Response> Engine::fuse(std::vector<Response> responses) const {
  if (config_.fusion_threshold_bytes == 0) return responses;
  std::vector<Response> fused;
  std::vector<size_t> fused_bytes;
  for (Response& response : responses) {
    const size_t bytes = response.total_bytes();
    bool merged = false;
    for (size_t i = 0; i < fused.size() && !merged; ++i) {
      if (fusable(fused[i], response) && fused_bytes[i] + bytes <= config_.fusion_threshold_bytes) {
        for (RequestMeta& meta : response.requests) fused[i].requests.push_back(std::move(meta));
        fused_bytes[i] += bytes;
        merged = true;
      }
    }
    if (!merged) {
      fused.push_back(std::move(response));
      fused_bytes.push_back(bytes);
    }
  }
  return fused;
}

// After a response ran on every rank: the response cache learns its requests (every rank inserts
// and evicts alike, Note [Response cache]), and after a join every rank takes part again.
void Engine::remember(const Response& response) {
  if (response.type == OpType::kJoin) joined_ = false;
  for (const RequestMeta& meta : response.requests) {
    if (!is_cacheable(meta)) continue;
    for (const uint32_t removed : cache_.put(meta)) demote(removed);
  }
}

void Engine::demote(uint32_t bit) {
  const auto it = cached_pending_.find(bit);
  if (it == cached_pending_.end()) return;
  uncached_to_send_.push_back(it->second);
  cached_pending_.erase(it);
}

}  // namespace dist_sync

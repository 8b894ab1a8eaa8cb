#include "engine/engine.h"

#include <sys/prctl.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "collectives/allgatherv.h"
#include "collectives/allreduce.h"
#include "collectives/alltoallv.h"
#include "collectives/broadcast.h"
#include "collectives/hierarchical.h"
#include "collectives/recursive_doubling.h"
#include "collectives/reducescatter.h"
#include "collectives/ring.h"
#include "common/errors.h"
#include "common/logging.h"
#include "common/termination_report.h"
#include "engine/byte_messages.h"
#include "engine/wire.h"

namespace dist_sync {
namespace {

// Bits of the flags word of the cycle's allreduce (combined with OR; Note [Negotiation cycle]).
constexpr uint64_t kFlagUncached = 1u << 0;   // some rank has requests the cache can't answer
constexpr uint64_t kFlagShutdown = 1u << 1;   // some rank is shutting down
constexpr uint64_t kFlagStallReport = 1u << 2;  // the coordinator wants to inspect stalls

// Longest sleep between polls while this rank has work pending (Note [Cycle timing]).
constexpr std::chrono::microseconds kBusyPoll{200};

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
  return single_dtype(x, &dx) && single_dtype(y, &dy) && dx == dy && x.reduce_op == y.reduce_op &&
         x.average == y.average && x.prescale == y.prescale && x.postscale == y.postscale;
}

size_t response_bytes(const Response& response) {
  size_t total = 0;
  for (const RequestMeta& meta : response.requests) total += meta.total_bytes();
  return total;
}

}  // namespace

Engine::Engine(const EngineConfig& config, std::unique_ptr<Communicator> comm, AbortJob abort_job,
               std::unique_ptr<Communicator> local, std::unique_ptr<Communicator> cross)
    : config_(config),
      comm_(std::move(comm)),
      local_comm_(std::move(local)),
      cross_comm_(std::move(cross)),
      abort_job_(std::move(abort_job)),
      rank_(comm_->rank()),
      size_(comm_->size()),
      cache_(config.cache_capacity) {
  set_log_level(config.log_level);
  set_log_rank(rank_);
  const auto timeout = std::chrono::seconds(static_cast<int64_t>(config.stall_timeout_seconds));
  data_wait_.timeout = timeout;
  data_wait_.abort = &abort_waits_;
  // Note [Cycle timing]
  // A rank with work pending polls for its peers in short sleeps (at most kBusyPoll), so a late
  // rank's arrival is noticed within ~0.2 ms whatever the cycle time. A rank with nothing
  // pending sleeps through its cycle time and then polls without spinning: the cycle time only
  // bounds how soon an idle engine takes part in a negotiation it has nothing for, and sets
  // what idling costs.
  negotiation_wait_ = data_wait_;
  negotiation_wait_.spin = std::chrono::microseconds(20);
  negotiation_wait_.yield = std::chrono::microseconds(0);
  negotiation_wait_.max_sleep = kBusyPoll;
  idle_negotiation_wait_ = negotiation_wait_;
  idle_negotiation_wait_.spin = std::chrono::microseconds(0);
  idle_negotiation_wait_.max_sleep = kBusyPoll;  // a submission may arrive mid-wait
  for (Communicator* c : {local_comm_.get(), cross_comm_.get()}) {
    if (c != nullptr) c->set_wait_config(data_wait_);
  }
  if (rank_ == 0) coordinator_ = std::make_unique<Coordinator>(size_, config_);
  if (rank_ == 0 && !config.timeline_path.empty()) timeline_.start(config.timeline_path);
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  shutdown();
  timeline_.stop();
}

uint64_t Engine::submit(Request request) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopped_) throw Error("dist_sync has stopped: " + stop_reason_);
  if (shutdown_requested_) throw Error("dist_sync is shutting down (shutdown() was called)");
  const std::string& name = request.meta.name;
  if (in_flight_.count(name) != 0) {
    throw UsageError(detail::concat(
        "an operation named '", name, "' is already in flight on rank ", rank_,
        "; names must be unique among operations that have not been synchronized yet"));
  }
  request.handle = handles_.create();
  request.submitted = Clock::now();
  const uint64_t handle = request.handle;
  in_flight_.insert(name);
  queue_.push_back(std::move(request));
  lock.unlock();
  wake_.notify_one();
  return handle;
}

void Engine::shutdown(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!shutdown_requested_) shutdown_reason_ = reason;
    shutdown_requested_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

bool Engine::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !stopped_;
}

std::string Engine::stop_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stop_reason_;
}

bool Engine::failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failed_;
}

void Engine::loop() {
  // Wake-ups within ~10 us of the requested time (the default slack is 50 us): idle ranks stay
  // in step and the cycle's short sleeps mean what they say.
  prctl(PR_SET_TIMERSLACK, 10000UL, 0, 0, 0);
  try {
    agree_on_settings();
    // Idle waits are measured from the end of the previous cycle: the cycle's allreduce ends at
    // nearly the same moment on every rank, so idle ranks wake together and a cycle costs one
    // quick exchange instead of the earliest rank polling for the latest one.
    auto cycle_end = Clock::now() - config_.cycle_time;
    std::chrono::microseconds backoff{0};
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        // With local work pending, cycle again at once (or soon, if the last cycle made no
        // progress); otherwise once per cycle time, or as soon as something is submitted.
        const auto wait = pending_.empty() ? config_.cycle_time : backoff;
        wake_.wait_until(lock, cycle_end + wait,
                         [this] { return !queue_.empty() || shutdown_requested_; });
      }
      const size_t completed_before = completed_;
      if (!cycle()) break;
      cycle_end = Clock::now();
      // No progress although work is pending: the matching submissions are late somewhere.
      // Back off (a little) so ranks with disjoint pending work don't spin on empty cycles.
      if (completed_ != completed_before) {
        backoff = std::chrono::microseconds(0);
      } else {
        backoff = std::min(kBusyPoll, backoff.count() == 0 ? std::chrono::microseconds(20) : backoff * 2);
      }
    }
  } catch (const std::exception& error) {
    fatal(error.what());
  }
}

// Note [Settings every rank must share]
// Segment size, the small-message threshold, the fusion threshold, the cache capacity and the
// hierarchical switch decide message sizes, algorithms and bit positions; ranks that disagreed
// would hang or mis-pair messages. Rank 0's values win, and a rank whose own differ says so.
void Engine::agree_on_settings() {
  comm_->set_wait_config(data_wait_);
  std::vector<uint64_t> mine = {config_.collectives.segment_bytes,
                                config_.collectives.small_allreduce_bytes,
                                config_.fusion_threshold_bytes, config_.cache_capacity,
                                config_.hierarchical_allreduce ? 1u : 0u};
  std::vector<uint8_t> bytes(mine.size() * sizeof(uint64_t));
  std::memcpy(bytes.data(), mine.data(), bytes.size());
  broadcast_bytes(*comm_, bytes, 0, kNegotiationTag);
  std::vector<uint64_t> agreed(mine.size());
  std::memcpy(agreed.data(), bytes.data(), bytes.size());
  static const char* const names[] = {"DIST_SYNC_RING_SEGMENT_BYTES", "DIST_SYNC_SMALL_ALLREDUCE_BYTES",
                                      "DIST_SYNC_FUSION_THRESHOLD", "DIST_SYNC_CACHE_CAPACITY",
                                      "DIST_SYNC_HIERARCHICAL_ALLREDUCE"};
  for (size_t i = 0; i < mine.size(); ++i) {
    if (mine[i] != agreed[i]) {
      log_message(LogLevel::kWarning, detail::concat(names[i], " is ", mine[i], " on this rank but ",
                                                     agreed[i], " on rank 0; using rank 0's"));
    }
  }
  config_.collectives.segment_bytes = agreed[0];
  config_.collectives.small_allreduce_bytes = agreed[1];
  config_.fusion_threshold_bytes = agreed[2];
  if (agreed[3] != cache_.capacity()) cache_ = ResponseCache(agreed[3]);
  config_.hierarchical_allreduce = agreed[4] != 0;
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

bool Engine::use_hierarchical(size_t bytes) const {
  return hierarchical_usable_ && bytes > config_.collectives.small_allreduce_bytes;
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
    const size_t bytes = response_bytes(response);
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

std::byte* Engine::zeros(size_t bytes) {
  if (join_zeros_bytes_ < bytes) {
    join_zeros_ = allocate_host(bytes);
    join_zeros_bytes_ = bytes;
  }
  std::memset(join_zeros_.get(), 0, bytes);
  return join_zeros_.get();
}

void Engine::execute(const Response& response) {
  const auto started = Clock::now();
  stats_.executions.fetch_add(1, std::memory_order_relaxed);
  std::vector<Request*> locals;
  for (const RequestMeta& meta : response.requests) {
    const auto it = pending_.find(meta.name);
    locals.push_back(it == pending_.end() ? nullptr : &it->second);
    DS_ASSERT(locals.back() != nullptr || joined_ || response.type == OpType::kJoin,
              "no local request for '", meta.name, "' on a rank that has not joined");
  }
  if (!response.error.empty()) {
    for (size_t i = 0; i < locals.size(); ++i) {
      if (locals[i] != nullptr) {
        OpResult result;
        result.error = response.error;
        finish(response.requests[i].name, std::move(result));
      }
    }
    log_message(LogLevel::kDebug, response.error);
    return;
  }
  PhaseLog phases;
  PhaseLog* const phase_log = timeline_.enabled() ? &phases : nullptr;
  OpResult result;
  switch (response.type) {
    case OpType::kAllreduce: execute_allreduce(response, locals, phase_log); break;
    case OpType::kBroadcast: execute_broadcast(response, locals); break;
    case OpType::kAllgather: execute_allgather(response, locals.front(), result); break;
    case OpType::kAlltoall: execute_alltoall(response, locals.front(), result); break;
    case OpType::kReducescatter: execute_reducescatter(response, locals.front(), result); break;
    case OpType::kBarrier: break;
    case OpType::kJoin:
      result.join_rank = response.last_joined;
      joined_ = false;
      break;
  }
  if (timeline_.enabled()) record_timeline(response, locals, started, phases);
  update_cache(response);
  for (size_t i = 0; i < locals.size(); ++i) {
    if (locals[i] != nullptr) finish(response.requests[i].name, i + 1 == locals.size() ? std::move(result) : result);
  }
}

// Per tensor: QUEUE (submitted until the engine thread took it), NEGOTIATE (until every rank had
// it and its response ran), then the collective's phases, or one span named after the op.
void Engine::record_timeline(const Response& response, const std::vector<Request*>& locals,
                             Clock::time_point started, const PhaseLog& phases) {
  const auto finished = Clock::now();
  const std::string args = detail::concat("\"fused_requests\": ", response.requests.size(),
                                          ", \"bytes\": ", response_bytes(response));
  for (size_t i = 0; i < locals.size(); ++i) {
    if (locals[i] == nullptr) continue;
    const std::string& name = response.requests[i].name;
    timeline_.span(name, "QUEUE", locals[i]->submitted, locals[i]->taken);
    timeline_.span(name, "NEGOTIATE", locals[i]->taken, started);
    if (phases.ends.empty()) {
      timeline_.span(name, op_type_name(response.type), started, finished, args);
      continue;
    }
    auto begin = started;
    for (const auto& [phase, end] : phases.ends) {
      timeline_.span(name, phase, begin, end, args);
      begin = end;
    }
  }
}

// Average is Sum divided by the number of ranks (joined ranks included: they contribute zeros).
Scaling Engine::scaling_of(const RequestMeta& meta) const {
  return Scaling{meta.prescale, meta.postscale, meta.average ? int64_t{size_} : int64_t{1}};
}

void Engine::execute_allreduce(const Response& response, const std::vector<Request*>& locals,
                               PhaseLog* phases) {
  const RequestMeta& first = response.requests.front();
  const Scaling scaling = scaling_of(first);
  size_t missing_bytes = 0;
  for (size_t i = 0; i < locals.size(); ++i) {
    if (locals[i] == nullptr) missing_bytes += response.requests[i].total_bytes();
  }
  std::byte* zero_cursor = missing_bytes > 0 ? zeros(missing_bytes) : nullptr;
  // A grouped request may mix dtypes: one pass per dtype, in a fixed (enum) order.
  std::map<DataType, SpanList> by_dtype;
  for (size_t i = 0; i < locals.size(); ++i) {
    const RequestMeta& meta = response.requests[i];
    for (size_t t = 0; t < meta.tensors.size(); ++t) {
      const size_t bytes = meta.tensors[t].bytes();
      SpanList& spans = by_dtype[meta.tensors[t].dtype];
      if (locals[i] != nullptr) {
        spans.add(locals[i]->inputs[t], locals[i]->outputs[t], bytes);
      } else {
        spans.add(zero_cursor, zero_cursor, bytes);  // joined: contribute zeros
        zero_cursor += bytes;
      }
    }
  }
  for (const auto& [dtype, spans] : by_dtype) {
    if (use_hierarchical(spans.bytes())) {
      hierarchical_allreduce(*local_comm_, *cross_comm_, spans, dtype, first.reduce_op, scaling,
                             config_.collectives, workspace_, op_traits(OpType::kAllreduce).tag,
                             phases);
    } else {
      allreduce(*comm_, spans, dtype, first.reduce_op, scaling, config_.collectives, workspace_,
                op_traits(OpType::kAllreduce).tag, phases);
    }
  }
}

void Engine::execute_broadcast(const Response& response, const std::vector<Request*>& locals) {
  const int root = response.requests.front().root;
  size_t missing_bytes = 0;
  for (size_t i = 0; i < locals.size(); ++i) {
    if (locals[i] == nullptr) missing_bytes += response.requests[i].total_bytes();
  }
  std::byte* scratch = missing_bytes > 0 ? zeros(missing_bytes) : nullptr;
  SpanList spans;
  for (size_t i = 0; i < locals.size(); ++i) {
    const RequestMeta& meta = response.requests[i];
    for (size_t t = 0; t < meta.tensors.size(); ++t) {
      const size_t bytes = meta.tensors[t].bytes();
      if (locals[i] == nullptr) {
        spans.add(scratch, scratch, bytes);
        scratch += bytes;
      } else if (rank_ == root) {
        spans.add(locals[i]->inputs[t], locals[i]->outputs[t], bytes);
        if (locals[i]->inputs[t] != locals[i]->outputs[t]) {
          std::memcpy(locals[i]->outputs[t], locals[i]->inputs[t], bytes);
        }
      } else {
        spans.add(locals[i]->outputs[t], locals[i]->outputs[t], bytes);
      }
    }
  }
  broadcast(*comm_, spans, root, config_.collectives, workspace_, op_traits(OpType::kBroadcast).tag);
}

void Engine::execute_allgather(const Response& response, Request* local, OpResult& result) {
  const TensorMeta& tensor = response.requests.front().tensors.front();
  const size_t row_bytes = static_cast<size_t>(tensor.row_elements()) * dtype_size(tensor.dtype);
  std::vector<size_t> blocks(static_cast<size_t>(size_));
  int64_t total_rows = 0;
  for (size_t r = 0; r < blocks.size(); ++r) {
    const int64_t rows = response.rows_by_rank.front()[r];
    blocks[r] = static_cast<size_t>(rows) * row_bytes;
    total_rows += rows;
  }
  auto output = std::make_shared<OutputBuffer>(static_cast<size_t>(total_rows) * row_bytes);
  const void* input = local != nullptr ? local->inputs.front() : nullptr;
  allgatherv(*comm_, input, output->data(), blocks, config_.collectives, workspace_,
             op_traits(OpType::kAllgather).tag);
  result.output = std::move(output);
  result.output_shape = tensor.shape.empty() ? std::vector<int64_t>{total_rows} : tensor.shape;
  result.output_shape[0] = total_rows;
  // Each rank's row count, so callers can split the result (allgather's backward) for free.
  result.received_splits = response.rows_by_rank.front();
}

void Engine::execute_alltoall(const Response& response, Request* local, OpResult& result) {
  const TensorMeta& tensor = response.requests.front().tensors.front();
  const size_t row_bytes = static_cast<size_t>(tensor.row_elements()) * dtype_size(tensor.dtype);
  const size_t n = static_cast<size_t>(size_);
  const size_t me = static_cast<size_t>(rank_);
  std::vector<size_t> send_bytes(n), recv_bytes(n);
  int64_t total_rows = 0;
  for (size_t p = 0; p < n; ++p) {
    send_bytes[p] = static_cast<size_t>(response.split_matrix[me * n + p]) * row_bytes;
    const int64_t rows = response.split_matrix[p * n + me];
    recv_bytes[p] = static_cast<size_t>(rows) * row_bytes;
    result.received_splits.push_back(rows);
    total_rows += rows;
  }
  auto output = std::make_shared<OutputBuffer>(static_cast<size_t>(total_rows) * row_bytes);
  alltoallv(*comm_, local->inputs.front(), send_bytes, output->data(), recv_bytes,
            op_traits(OpType::kAlltoall).tag);
  result.output = std::move(output);
  result.output_shape = tensor.shape.empty() ? std::vector<int64_t>{total_rows} : tensor.shape;
  result.output_shape[0] = total_rows;
}

void Engine::execute_reducescatter(const Response& response, Request* local, OpResult& result) {
  const RequestMeta& meta = response.requests.front();
  const TensorMeta& tensor = meta.tensors.front();
  const size_t row_elements = static_cast<size_t>(tensor.row_elements());
  const size_t element_bytes = dtype_size(tensor.dtype);
  const std::vector<size_t> row_bounds = even_chunk_bounds(static_cast<size_t>(tensor.rows()), size_, 1);
  std::vector<size_t> element_bounds(row_bounds.size());
  for (size_t i = 0; i < row_bounds.size(); ++i) element_bounds[i] = row_bounds[i] * row_elements;
  const size_t me = static_cast<size_t>(rank_);
  const size_t my_rows = row_bounds[me + 1] - row_bounds[me];
  auto output = std::make_shared<OutputBuffer>(my_rows * row_elements * element_bytes);
  const size_t total_bytes = tensor.bytes();
  std::byte* scratch = workspace_.get(Workspace::kFusion, total_bytes);
  const void* input = local != nullptr ? local->inputs.front() : zeros(total_bytes);
  const Scaling scaling = scaling_of(meta);
  reducescatter(*comm_, input, output->data(), scratch, element_bounds, tensor.dtype,
                meta.reduce_op, scaling, config_.collectives, workspace_,
                op_traits(OpType::kReducescatter).tag);
  result.output = std::move(output);
  result.output_shape = tensor.shape;
  if (result.output_shape.empty()) result.output_shape.push_back(1);
  result.output_shape[0] = static_cast<int64_t>(my_rows);
}

void Engine::update_cache(const Response& response) {
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

void Engine::finish(const std::string& name, OpResult result) {
  const auto it = pending_.find(name);
  if (it == pending_.end()) return;
  const uint64_t handle = it->second.handle;
  pending_.erase(it);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_.erase(name);
  }
  ++completed_;
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  handles_.complete(handle, std::move(result));
}

void Engine::stop(const std::string& reason, bool failed) {
  record_termination_reason(reason);  // Note [Saying why mpirun ended a rank]
  std::deque<Request> queued;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    failed_ = failed;
    stop_reason_ = reason;
    queued.swap(queue_);
  }
  for (Request& request : queued) pending_.emplace(request.meta.name, std::move(request));
  std::vector<std::string> names;
  for (const auto& entry : pending_) names.push_back(entry.first);
  for (const std::string& name : names) {
    OpResult result;
    result.error = detail::concat(reason, " (while '", name, "' was pending on rank ", rank_, ")");
    finish(name, std::move(result));
  }
  cached_pending_.clear();
  uncached_to_send_.clear();
}

void Engine::fatal(const std::string& message) {
  log_message(LogLevel::kError, message);
  abort_waits_.store(true);
  stop(message, true);
  timeline_.stop();
  // Give the Python side time to raise the error and exit by itself (its shutdown() wakes us);
  // if it doesn't, end the job rather than leave ranks hanging.
  std::unique_lock<std::mutex> lock(mutex_);
  const bool exited = wake_.wait_for(
      lock, std::chrono::duration<double>(config_.fatal_grace_seconds),
      [this] { return shutdown_requested_; });
  if (!exited && abort_job_) {
    lock.unlock();
    log_message(LogLevel::kError, "ending the job after the error above");
    abort_job_();
  }
}

}  // namespace dist_sync

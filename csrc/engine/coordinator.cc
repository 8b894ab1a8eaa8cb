#include "engine/coordinator.h"

#include <algorithm>
#include <functional>
#include <sstream>

#include "common/errors.h"
#include "common/logging.h"

namespace dist_sync {
namespace {

std::string format_ranks(const std::vector<int>& ranks) {
  std::ostringstream out;
  out << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size(); ++i) out << (i ? ", " : "") << ranks[i];
  return out.str();
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) out << ",";
  out << ")";
  return out.str();
}

std::string format_double(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

// The metadata of each present rank, and which ranks are present.
struct Contributions {
  std::vector<int> ranks;
  std::vector<const RequestMeta*> metas;
};

// "<field> differs across ranks: a on rank 0; b on ranks 1, 2", or empty if all agree.
std::string disagreement(const Contributions& c, const std::string& field,
                         const std::function<std::string(const RequestMeta&)>& value_of) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (size_t i = 0; i < c.metas.size(); ++i) {
    const std::string value = value_of(*c.metas[i]);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == value; });
    if (it == groups.end()) {
      groups.emplace_back(value, std::vector<int>{c.ranks[i]});
    } else {
      it->second.push_back(c.ranks[i]);
    }
  }
  if (groups.size() <= 1) return "";
  std::ostringstream out;
  out << field << " differs across ranks: ";
  for (size_t i = 0; i < groups.size(); ++i) {
    out << (i ? "; " : "") << groups[i].first << " on " << format_ranks(groups[i].second);
  }
  return out.str();
}

// Finds the first field the ranks disagree on, in the order a user would want to hear about it.
std::string check_agreement(const Contributions& c) {
  const RequestMeta& first = *c.metas.front();
  std::string error = disagreement(c, "collective type", [](const RequestMeta& m) { return op_type_name(m.type); });
  if (!error.empty()) return error;
  error = disagreement(c, "device", [](const RequestMeta& m) { return device_kind_name(m.device); });
  if (!error.empty()) return error;
  error = disagreement(c, "number of tensors", [](const RequestMeta& m) { return std::to_string(m.tensors.size()); });
  if (!error.empty()) return error;
  const OpTraits& traits = op_traits(first.type);
  for (size_t t = 0; t < first.tensors.size(); ++t) {
    const std::string prefix = first.tensors.size() > 1 ? "tensor '" + first.tensors[t].name + "': " : "";
    error = disagreement(c, prefix + "dtype", [t](const RequestMeta& m) { return dtype_name(m.tensors[t].dtype); });
    if (!error.empty()) return error;
    if (traits.first_dimension_may_differ) {
      error = disagreement(c, prefix + "shape after the first dimension", [t](const RequestMeta& m) {
        const auto& shape = m.tensors[t].shape;
        return format_shape(std::vector<int64_t>(shape.begin() + (shape.empty() ? 0 : 1), shape.end()));
      });
    } else {
      error = disagreement(c, prefix + "shape", [t](const RequestMeta& m) { return format_shape(m.tensors[t].shape); });
    }
    if (!error.empty()) return error;
  }
  if (traits.reduces) {
    error = disagreement(c, "reduction op", [](const RequestMeta& m) { return reduce_op_name(m.reduce_op); });
    if (!error.empty()) return error;
    error = disagreement(c, "prescale_factor", [](const RequestMeta& m) { return format_double(m.prescale); });
    if (!error.empty()) return error;
    error = disagreement(c, "postscale_factor", [](const RequestMeta& m) { return format_double(m.postscale); });
    if (!error.empty()) return error;
  }
  if (traits.has_root) {
    error = disagreement(c, "root rank", [](const RequestMeta& m) { return std::to_string(m.root); });
    if (!error.empty()) return error;
  }
  return "";
}

}  // namespace

Coordinator::Coordinator(int size, const EngineConfig& config)
    : size_(size),
      warning_seconds_(config.stall_warning_seconds),
      timeout_seconds_(config.stall_timeout_seconds),
      joined_(static_cast<size_t>(size), false),
      next_stall_check_(Clock::now()) {}

void Coordinator::observe_cache_bits(const std::vector<uint64_t>& ready,
                                     const std::vector<uint64_t>& submitted, Clock::time_point now) {
  std::map<uint32_t, StallClock> still_partial;
  for (size_t word = 0; word < submitted.size(); ++word) {
    uint64_t partial = submitted[word] & ~ready[word];
    while (partial != 0) {
      const uint32_t bit = static_cast<uint32_t>(word * 64 + static_cast<size_t>(__builtin_ctzll(partial)));
      partial &= partial - 1;
      const auto it = partial_cached_.find(bit);
      still_partial[bit] = it != partial_cached_.end() ? it->second : StallClock{now, now, false};
    }
  }
  partial_cached_.swap(still_partial);
}

bool Coordinator::wants_stall_report(Clock::time_point now) const {
  if (table_.empty() && partial_cached_.empty()) return false;
  if (now < next_stall_check_) return false;
  const double threshold = timeout_seconds_ > 0 ? std::min(warning_seconds_, timeout_seconds_) : warning_seconds_;
  const auto threshold_point = now - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(threshold));
  for (const auto& [name, pending] : table_) {
    if (pending.first_seen <= threshold_point) return true;
  }
  for (const auto& [bit, clock] : partial_cached_) {
    if (clock.first_seen <= threshold_point) return true;
  }
  return false;
}

bool Coordinator::is_ready(const Pending& pending) const {
  const bool is_join = [&] {
    for (const auto& meta : pending.by_rank) {
      if (meta) return meta->type == OpType::kJoin;
    }
    return false;
  }();
  for (size_t r = 0; r < pending.by_rank.size(); ++r) {
    if (!pending.by_rank[r] && (is_join || !joined_[r])) return false;
  }
  return true;
}

Response Coordinator::make_response(const std::string& name, const Pending& pending) const {
  Contributions present;
  for (size_t r = 0; r < pending.by_rank.size(); ++r) {
    if (pending.by_rank[r]) {
      present.ranks.push_back(static_cast<int>(r));
      present.metas.push_back(&*pending.by_rank[r]);
    }
  }
  const RequestMeta& first = *present.metas.front();
  const OpTraits& traits = op_traits(first.type);
  Response response;
  response.type = first.type;
  response.requests.push_back(first);
  const std::string mismatch = check_agreement(present);
  if (!mismatch.empty()) {
    response.error = "Mismatched " + op_type_name(first.type) + " '" + name + "': " + mismatch;
    return response;
  }
  std::vector<int> joined;
  for (size_t r = 0; r < joined_.size(); ++r) {
    if (joined_[r] && !pending.by_rank[r]) joined.push_back(static_cast<int>(r));
  }
  if (!joined.empty()) {
    std::string problem;
    if (traits.has_root && joined_[static_cast<size_t>(first.root)]) {
      problem = "its root rank " + std::to_string(first.root) + " has already called join()";
    } else if (!traits.runs_with_joined_ranks) {
      problem = std::string(traits.name) + " cannot run while " + format_ranks(joined) + " ha" +
                (joined.size() == 1 ? "s" : "ve") + " called join()";
    }
    if (!problem.empty()) {
      response.error = op_type_name(first.type) + " '" + name + "' failed: " + problem;
      return response;
    }
  }
  if (traits.negotiates_rows) {
    for (size_t t = 0; t < first.tensors.size(); ++t) {
      std::vector<int64_t> rows(static_cast<size_t>(size_), 0);
      for (size_t r = 0; r < pending.by_rank.size(); ++r) {
        if (pending.by_rank[r]) rows[r] = pending.by_rank[r]->tensors[t].rows();
      }
      response.rows_by_rank.push_back(std::move(rows));
    }
  }
  if (traits.negotiates_splits) {
    const size_t n = static_cast<size_t>(size_);
    response.split_matrix.assign(n * n, 0);
    for (size_t s = 0; s < n; ++s) {
      const auto& splits = pending.by_rank[s]->splits;
      DS_ASSERT(splits.size() == n, "alltoall splits were validated at submission");
      std::copy(splits.begin(), splits.end(), response.split_matrix.begin() + static_cast<std::ptrdiff_t>(s * n));
    }
  }
  return response;
}

ResponseList Coordinator::full_round(const std::vector<RankMessage>& messages,
                                     const ResponseCache& cache, Clock::time_point now) {
  ResponseList list;
  std::vector<int> shutdown_ranks;
  for (size_t r = 0; r < messages.size(); ++r) {
    if (messages[r].shutdown) shutdown_ranks.push_back(static_cast<int>(r));
    for (const RequestMeta& meta : messages[r].requests) {
      if (meta.type == OpType::kJoin) {
        joined_[r] = true;
        last_joined_ = static_cast<int>(r);
      }
      auto [it, inserted] = table_.try_emplace(meta.name);
      if (inserted) {
        it->second.by_rank.resize(static_cast<size_t>(size_));
        it->second.first_seen = now;
        arrival_order_.push_back(meta.name);
      }
      it->second.by_rank[r] = meta;
    }
  }
  if (!shutdown_ranks.empty()) {
    list.shutdown = true;
    std::ostringstream reason;
    std::vector<int> plain;
    for (const int r : shutdown_ranks) {
      const std::string& why = messages[static_cast<size_t>(r)].shutdown_reason;
      if (why.empty()) {
        plain.push_back(r);
      } else {
        reason << (reason.tellp() > 0 ? "; " : "") << "rank " << r << " " << why;
      }
    }
    if (!plain.empty()) {
      reason << (reason.tellp() > 0 ? "; " : "") << format_ranks(plain)
             << " called dist_sync.shutdown() (or exited)";
    }
    list.shutdown_reason = reason.str();
    return list;
  }

  std::vector<std::string> still_waiting;
  std::optional<Response> join_response;
  for (const std::string& name : arrival_order_) {
    const Pending& pending = table_.at(name);
    if (!is_ready(pending)) {
      still_waiting.push_back(name);
      continue;
    }
    Response response = make_response(name, pending);
    if (response.type == OpType::kJoin) {
      response.last_joined = last_joined_;
      join_response = std::move(response);
    } else {
      list.responses.push_back(std::move(response));
    }
    table_.erase(name);
    stall_clocks_.erase(name);
  }
  arrival_order_.swap(still_waiting);
  if (join_response) {
    // Everyone has joined: requests still pending cannot have been submitted by anyone.
    list.responses.push_back(std::move(*join_response));
    std::fill(joined_.begin(), joined_.end(), false);
    last_joined_ = -1;
  }
  list.fatal_error = inspect_stalls(messages, cache, now);
  return list;
}

std::string Coordinator::inspect_stalls(const std::vector<RankMessage>& messages,
                                        const ResponseCache& cache, Clock::time_point now) {
  const bool have_reports = !messages.empty() && messages.front().stall_report;
  if (!have_reports) return "";
  next_stall_check_ = now + std::chrono::milliseconds(500);
  auto seconds_since = [now](Clock::time_point then) {
    return std::chrono::duration<double>(now - then).count();
  };
  std::vector<std::string> warnings;
  std::vector<std::string> timeouts;
  auto inspect = [&](StallClock& clock, const std::string& what, const std::vector<int>& submitted,
                     const std::vector<int>& missing) {
    const double age = seconds_since(clock.first_seen);
    std::ostringstream text;
    text << what << " was submitted by " << format_ranks(submitted) << " but not by "
         << format_ranks(missing) << " for " << static_cast<int64_t>(age) << " s";
    if (timeout_seconds_ > 0 && age >= timeout_seconds_) {
      timeouts.push_back(text.str());
    } else if (age >= warning_seconds_ &&
               (!clock.warned || seconds_since(clock.last_warned) >= warning_seconds_)) {
      clock.warned = true;
      clock.last_warned = now;
      warnings.push_back(text.str());
    }
  };
  for (const std::string& name : arrival_order_) {
    const Pending& pending = table_.at(name);
    std::vector<int> submitted, missing;
    const RequestMeta* meta = nullptr;
    for (size_t r = 0; r < pending.by_rank.size(); ++r) {
      if (pending.by_rank[r]) {
        submitted.push_back(static_cast<int>(r));
        meta = &*pending.by_rank[r];
      } else if (!joined_[r]) {
        missing.push_back(static_cast<int>(r));
      }
    }
    auto [clock, inserted] = stall_clocks_.try_emplace(name, StallClock{pending.first_seen, now, false});
    inspect(clock->second, op_type_name(meta->type) + " '" + name + "'", submitted, missing);
  }
  for (auto& [bit, clock] : partial_cached_) {
    if (!cache.contains(bit)) continue;
    std::vector<int> submitted, missing;
    for (size_t r = 0; r < messages.size(); ++r) {
      const auto& bits = messages[r].pending_cache_bits;
      if (std::find(bits.begin(), bits.end(), bit) != bits.end()) {
        submitted.push_back(static_cast<int>(r));
      } else if (!joined_[r]) {
        missing.push_back(static_cast<int>(r));
      }
    }
    if (submitted.empty() || missing.empty()) continue;
    const RequestMeta& meta = cache.meta(bit);
    inspect(clock, op_type_name(meta.type) + " '" + meta.name + "'", submitted, missing);
  }
  if (!warnings.empty()) {
    std::ostringstream text;
    text << "Stalled operations: some ranks submitted them and others have not, for more than "
         << warning_seconds_ << " s (DIST_SYNC_STALL_WARNING_SECONDS). A rank may be stuck, "
         << "or the ranks submit different operations:";
    for (const auto& line : warnings) text << "\n  " << line;
    log_message(LogLevel::kWarning, text.str());
  }
  if (timeouts.empty()) return "";
  std::ostringstream text;
  text << "Stall timeout: giving up after " << timeout_seconds_
       << " s (DIST_SYNC_STALL_TIMEOUT_SECONDS) because";
  for (const auto& line : timeouts) text << "\n  " << line;
  return text.str();
}

}  // namespace dist_sync

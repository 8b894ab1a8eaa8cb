// Execution: each response every rank agreed on runs through its op type's executor
// (engine/executors/), then completes this rank's handles and records the timeline.
#include "common/errors.h"
#include "common/logging.h"
#include "engine/engine.h"

namespace dist_sync {

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
    OpResult result;
    result.error = response.error;
    // Negotiation's verdict: the ranks disagree, or the op cannot run with the joined ranks.
    result.error_kind = ErrorKind::kMismatch;
    finish_response(response, locals, std::move(result));
    log_message(LogLevel::kDebug, response.error);
    return;
  }
  PhaseLog phases;
  const bool hierarchical = hierarchical_usable_;
  const ExecutionContext context{*comm_,
                                 hierarchical ? local_comm_.get() : nullptr,
                                 hierarchical ? cross_comm_.get() : nullptr,
                                 config_.collectives,
                                 workspace_,
                                 zeros_,
                                 timeline_.enabled() ? &phases : nullptr};
  OpResult result;
  executor_for(response.type)(context, response, locals, result);
  DS_ASSERT((result.output != nullptr) == op_traits(response.type).engine_allocates_output,
            op_type_name(response.type), ": executor and traits row disagree on the output");
  if (timeline_.enabled()) record_timeline(response, locals, started, phases);
  remember(response);
  finish_response(response, locals, std::move(result));
}

// Per tensor: QUEUE (submitted until the engine thread took it), NEGOTIATE (until every rank had
// it and its response ran), then the collective's phases, or one span named after the op.
void Engine::record_timeline(const Response& response, const std::vector<Request*>& locals,
                             Clock::time_point started, const PhaseLog& phases) {
  const auto finished = Clock::now();
  const std::string args = detail::concat("\"fused_requests\": ", response.requests.size(),
                                          ", \"bytes\": ", response.total_bytes());
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

void Engine::finish_response(const Response& response, const std::vector<Request*>& locals,
                             OpResult result) {
  // Ranks in a process set's messages are positions in the set; the label maps them back.
  if (!result.error.empty() && !process_set_label_.empty()) {
    result.error += " [" + process_set_label_ + "]";
  }
  size_t last = locals.size();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < locals.size(); ++i) {
      if (locals[i] == nullptr) continue;
      in_flight_.remove(*locals[i]);
      last = i;
    }
  }
  std::vector<std::pair<uint64_t, OpResult>> done;
  done.reserve(locals.size());
  for (size_t i = 0; i < locals.size(); ++i) {
    if (locals[i] == nullptr) continue;
    done.emplace_back(locals[i]->handle, i == last ? std::move(result) : result);
    pending_.erase(response.requests[i].name);  // locals[i] dangles from here on
    ++completed_;
  }
  stats_.requests.fetch_add(done.size(), std::memory_order_relaxed);
  handles_.complete(std::move(done));
}

void Engine::finish(const std::string& name, OpResult result) {
  const auto it = pending_.find(name);
  if (it == pending_.end()) return;
  const uint64_t handle = it->second.handle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_.remove(it->second);
  }
  pending_.erase(it);
  ++completed_;
  // Ranks in a process set's messages are positions in the set; the label maps them back.
  if (!result.error.empty() && !process_set_label_.empty()) {
    result.error += " [" + process_set_label_ + "]";
  }
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  handles_.complete(handle, std::move(result));
}

}  // namespace dist_sync

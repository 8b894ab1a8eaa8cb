// What each collective operation type is, in one row: the rules negotiation checks, what fusion
// and the response cache may do with it, and the message tag its data path uses.
//
// Note [One traits row per collective]
// The engine (cacheable, fusable), the coordinator (which fields every rank must agree on, what
// a response carries) and the bindings (the exported OpType enum and its names) all read these
// rows instead of switching on the op type, so adding a collective adds a row here, an executor
// (engine/executors/) and its algorithm (collectives/), not a case in every file.
#pragma once

#include <cstdint>
#include <string>

namespace dist_sync {

// The numeric values are part of the Python binding's contract (exported as dist_sync._core.OpType).
enum class OpType : int32_t {
  kAllreduce = 0,  // also grouped allreduce: one request, several entries
  kBroadcast = 1,
  kAllgather = 2,
  kAlltoall = 3,
  kReducescatter = 4,
  kBarrier = 5,
  kJoin = 6,
};
constexpr int kNumOpTypes = 7;

struct OpTraits {
  OpType type;
  const char* name;  // lower case, as in messages, timelines and automatic names
  int tag;           // message tag of its data path (distinct per type; see kNegotiationTag)
  // The response cache may answer it (Note [Response cache]).
  bool cacheable;
  // Requests ready in the same cycle may share one execution (Note [Fusion without copies]).
  bool fusable;
  // Has a reduction op and prescale/postscale factors: ranks must agree on them, and fused
  // requests must share them (and their single dtype).
  bool reduces;
  // Has a root rank: ranks must agree on it, and fused requests must share it.
  bool has_root;
  // Ranks may pass tensors whose first dimension differs; the rest of the shape must agree.
  bool first_dimension_may_differ;
  // The response carries every rank's row count (Response::rows_by_rank).
  bool negotiates_rows;
  // The response carries every rank's splits (Response::split_matrix).
  bool negotiates_splits;
  // May run while some ranks have called join() (they take part with zeros or nothing).
  bool runs_with_joined_ranks;
  // The result's size comes from negotiation, so the engine allocates it (OpResult::output).
  bool engine_allocates_output;
};

const OpTraits& op_traits(OpType type);
bool is_op_type(int32_t raw);
std::string op_type_name(OpType type);

// Tag of negotiation messages; no op type's tag equals it.
constexpr int kNegotiationTag = 1;

}  // namespace dist_sync

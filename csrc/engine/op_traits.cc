#include "engine/op_traits.h"

#include <array>
#include <initializer_list>

#include "common/errors.h"

namespace dist_sync {
namespace {

using T = OpTraits;

// A row with the listed properties true and all others false.
constexpr OpTraits row(OpType type, const char* name, int tag,
                       std::initializer_list<bool OpTraits::*> properties) {
  OpTraits traits{type, name, tag, false, false, false, false, false, false, false, false, false};
  for (bool OpTraits::*property : properties) traits.*property = true;
  return traits;
}

// Indexed by OpType.
constexpr std::array<OpTraits, kNumOpTypes> kTraits = {{
    row(OpType::kAllreduce, "allreduce", 2,
        {&T::cacheable, &T::fusable, &T::reduces, &T::runs_with_joined_ranks}),
    row(OpType::kBroadcast, "broadcast", 3,
        {&T::cacheable, &T::fusable, &T::has_root, &T::runs_with_joined_ranks}),
    row(OpType::kAllgather, "allgather", 4,
        {&T::first_dimension_may_differ, &T::negotiates_rows, &T::runs_with_joined_ranks,
         &T::engine_allocates_output}),
    row(OpType::kAlltoall, "alltoall", 5,
        {&T::first_dimension_may_differ, &T::negotiates_splits, &T::engine_allocates_output}),
    row(OpType::kReducescatter, "reducescatter", 6,
        {&T::cacheable, &T::reduces, &T::runs_with_joined_ranks, &T::engine_allocates_output}),
    row(OpType::kBarrier, "barrier", 7, {&T::runs_with_joined_ranks}),
    row(OpType::kJoin, "join", 8, {&T::runs_with_joined_ranks}),
}};

constexpr bool rows_in_order() {
  for (size_t i = 0; i < kTraits.size(); ++i) {
    if (static_cast<size_t>(kTraits[i].type) != i || kTraits[i].tag == kNegotiationTag) return false;
  }
  return true;
}
static_assert(rows_in_order(), "one row per OpType, in enum order, none with the negotiation tag");

}  // namespace

bool is_op_type(int32_t raw) { return raw >= 0 && raw < kNumOpTypes; }

const OpTraits& op_traits(OpType type) {
  DS_ASSERT(is_op_type(static_cast<int32_t>(type)), "unknown op type ", static_cast<int>(type));
  return kTraits[static_cast<size_t>(type)];
}

std::string op_type_name(OpType type) {
  if (!is_op_type(static_cast<int32_t>(type))) {
    return "op(" + std::to_string(static_cast<int>(type)) + ")";
  }
  return kTraits[static_cast<size_t>(type)].name;
}

}  // namespace dist_sync

// Recursive-doubling allreduce: the latency-bound algorithm for small buffers.
//
// Note [Deterministic pairing]
// Partners combine as op(lower rank's value, higher rank's value) on both sides, so the two
// results are bit-identical even where op is not bitwise commutative (min/max of +0 and -0,
// NaN payloads).
#pragma once

#include <cstddef>

#include "comm/communicator.h"
#include "common/dtype.h"

namespace dist_sync {

// Allreduce of a contiguous buffer, in place: ceil(log2 N) exchanges (plus one before and one
// after for ranks beyond the largest power of two). No scaling. `scratch` holds one buffer.
void recursive_doubling_allreduce(Communicator& comm, void* data, size_t count, DataType dtype,
                                  ReduceOp op, std::byte* scratch, int tag);

}  // namespace dist_sync

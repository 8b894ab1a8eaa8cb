// Element-wise reduction kernels, one per (dtype, op), vectorised by the compiler.
//
// Note [Scaling fused into the reduction]
// Average is Sum with the result divided by the number of ranks (ReduceOp::kAverage reduces as
// kSum; the caller's Scaling::divisor divides). Rather than a separate pass over
// the buffer, the division (and any user prescale/postscale) is applied inside the last
// reduction step that produces each element, or inside the copy that moves the result out.
// float16/bfloat16 are widened to float32 for each step and rounded once per step.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace dist_sync {

struct Scaling {
  double prescale = 1.0;   // multiplies this rank's own operand before it is combined
  double postscale = 1.0;  // multiplies the combined result
  int64_t divisor = 1;     // the combined result is divided by this (Average: number of ranks)

  bool has_prescale() const { return prescale != 1.0; }
  bool has_postscale() const { return postscale != 1.0 || divisor != 1; }
};

// dst[i] = op(own[i] * prescale, other[i]), then postscale/divisor if `finalize` is set.
// dst may be the same pointer as own or other (not partially overlapping).
// Integer Sum and Product wrap around like numpy; integer division truncates toward zero.
void reduce(void* dst, const void* own, const void* other, size_t count, DataType dtype,
            ReduceOp op, const Scaling& scaling, bool finalize);

// dst[i] = src[i] * factor / divisor. A plain copy when factor == 1 and divisor == 1.
// dst may equal src.
void scale_copy(void* dst, const void* src, size_t count, DataType dtype, double factor,
                int64_t divisor);

}  // namespace dist_sync

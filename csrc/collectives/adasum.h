// Adasum allreduce (Maleki et al., "Scaling Distributed Training with Adaptive Summation",
// MLSys 2021): recursive vector halving, distance doubling.
//
// Note [Adasum]
// Adasum combines two gradients a and b as
//     (1 - a.b / (2 |a|^2)) a + (1 - a.b / (2 |b|^2)) b
// (a vector whose norm is 0 gets coefficient 1): orthogonal gradients add, parallel ones
// average. N = 2^k ranks combine along a binary tree: at level l (distance d = 2^l) the left
// half of each group of 2d ranks holds the combination A of its own ranks and the right half B;
// the group combines A and B. Vector halving keeps this cheap: at each level a rank keeps half
// of its current segment and swaps the other half with its partner (rank ^ d), so both hold the
// same range of A and B; the three dot products are summed over the group (a recursive-doubling
// allreduce of 3 doubles among its 2d ranks), and each rank combines its range. After k levels
// each rank holds 1/N of the result, and the reverse exchanges (distance halving) gather it
// everywhere. Each rank sends about 2 (N-1)/N of the buffer, like the ring. Dot products and the
// combination are computed in float64; the combined range is stored in the tensor's dtype at
// each level, so float16 and bfloat16 round once per level. Every element of the result is
// computed by one rank and copied to the others, and the group sums are formed identically on
// every member (sums of two operands commute), so results are bit-identical everywhere.
#pragma once

#include <cstddef>
#include <string>

#include "comm/communicator.h"
#include "common/dtype.h"

namespace dist_sync {

// Whether Adasum can run on `size` ranks (a power of two) and `dtype` (float16, bfloat16,
// float32, float64); otherwise the reason, for the user's error message.
std::string adasum_unsupported(int size, DataType dtype);

// In place on `data` (`count` elements of `dtype`); `scratch` holds count / 2 + 1 elements.
// `prescale` multiplies this rank's input first, `postscale` the result.
void adasum_allreduce(Communicator& comm, void* data, size_t count, DataType dtype,
                      double prescale, double postscale, std::byte* scratch, int tag);

}  // namespace dist_sync

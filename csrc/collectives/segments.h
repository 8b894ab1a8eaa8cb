// How a ring chunk is cut into the segments that travel as one message each.
//
// Note [Segments follow tensors]
// A segment that lies inside one tensor is sent straight from it and received straight into
// it; one that straddles tensors is packed into (or unpacked from) a slot, a memory pass the
// direct path does not pay. Cutting every segment_bytes regardless of the tensors makes about
// half the segments of a fused buffer straddle (ResNet-50's 161 gradients: the packing copies
// were 14% of the allreduce's profile). So segments are planned from the tensor layout: a
// tensor piece of at least direct_piece_bytes() gets segments of its own, evenly sized and at most
// segment_bytes; each run of smaller pieces between them is packed into shared segments, since
// a message per small tensor costs more than copying it.
//
// Every rank must plan identical segments, or messages would be matched to the wrong places.
// The plan depends only on where spans begin and end, never on addresses, and every caller's
// span boundaries agree across ranks inside each chunk: fused tensors are negotiated to equal
// sizes (joined ranks add zero spans of the same sizes), and allgatherv and reducescatter split
// spans only at chunk bounds.
#pragma once

#include <cstddef>
#include <vector>

#include "collectives/span_list.h"

namespace dist_sync {

struct Extent {
  size_t offset;  // bytes into the buffer
  size_t bytes;
};

// A piece of one tensor at least this long, or at least one segment long, is worth messages of
// its own rather than a copy through a slot (measured: docs/benchmarks.md "Segments follow
// tensors").
constexpr size_t kDirectPieceBytes = size_t{64} << 10;
inline size_t direct_piece_bytes(size_t segment_bytes) {
  return segment_bytes < kDirectPieceBytes ? segment_bytes : kDirectPieceBytes;
}

// Segments covering [offset, offset + length) of `buffer`, in order.
std::vector<Extent> plan_segments(const SpanList& buffer, size_t offset, size_t length,
                                  size_t segment_bytes, size_t element_bytes);

}  // namespace dist_sync

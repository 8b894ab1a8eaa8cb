// How a ring chunk is cut into the segments that travel as one message each.
//
// Note [Segments follow tensors]
// A segment that lies inside one tensor is sent straight from it and received straight into
// it; one that straddles tensors is packed into (or unpacked from) a slot, a memory pass the
// direct path does not pay. Cutting every segment_bytes regardless of the tensors makes about
// half the segments of a fused buffer straddle (ResNet-50's 161 gradients: the packing copies
// were 14% of the allreduce's profile). So segments are planned from the tensor layout: a
// tensor piece at least one segment long gets segments of its own, evenly sized and at most
// segment_bytes; each run of shorter pieces between them is packed into shared segments. A
// message costs about as much as copying a few hundred KiB here (each adds a rendezvous and a
// kernel call), so giving shorter pieces messages of their own lost more than the copies
// saved: ResNet-50's gradients fused into one pass took 11.8 ms with pieces from 64 KiB
// sent directly and 11.1 ms from 1 MiB (the segment size), 2 ranks, views of one array.
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

// Segments covering [offset, offset + length) of `buffer`, in order.
std::vector<Extent> plan_segments(const SpanList& buffer, size_t offset, size_t length,
                                  size_t segment_bytes, size_t element_bytes);

}  // namespace dist_sync

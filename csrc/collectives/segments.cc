#include "collectives/segments.h"

#include "common/errors.h"

namespace dist_sync {
namespace {

// The fewest segments of at most segment_bytes, equal to within one element, so no short
// tail segment pays a whole message's latency for little data.
void split_evenly(size_t offset, size_t length, size_t segment_bytes, size_t element_bytes,
                  std::vector<Extent>& segments) {
  if (length == 0) return;
  const size_t count = (length + segment_bytes - 1) / segment_bytes;
  const size_t elements = length / element_bytes;
  const size_t base = elements / count;
  const size_t extra = elements % count;
  for (size_t i = 0; i < count; ++i) {
    const size_t bytes = (base + (i < extra ? 1 : 0)) * element_bytes;
    segments.push_back(Extent{offset, bytes});
    offset += bytes;
  }
}

}  // namespace

std::vector<Extent> plan_segments(const SpanList& buffer, size_t offset, size_t length,
                                  size_t segment_bytes, size_t element_bytes) {
  DS_ASSERT(segment_bytes >= element_bytes && segment_bytes % element_bytes == 0,
            "segments hold whole elements");
  std::vector<Extent> segments;
  size_t packed_begin = offset;  // the run of small pieces not yet planned
  size_t cursor = offset;
  buffer.for_each(offset, length, [&](const std::byte*, std::byte*, size_t piece) {
    DS_ASSERT(piece % element_bytes == 0, "span pieces hold whole elements");
    if (piece >= segment_bytes) {
      split_evenly(packed_begin, cursor - packed_begin, segment_bytes, element_bytes, segments);
      split_evenly(cursor, piece, segment_bytes, element_bytes, segments);
      packed_begin = cursor + piece;
    }
    cursor += piece;
  });
  split_evenly(packed_begin, cursor - packed_begin, segment_bytes, element_bytes, segments);
  return segments;
}

}  // namespace dist_sync

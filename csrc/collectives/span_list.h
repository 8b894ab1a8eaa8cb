// A list of (input, output) byte ranges that collectives treat as one concatenated buffer.
//
// Note [Fusion without copies]
// Fused tensors are not packed into a staging buffer before the ring runs. The ring reads each
// rank's contribution straight from the input tensors and writes results straight into the
// output tensors; only a segment that straddles two tensors is packed (into a segment-sized
// slot). Large fused responses therefore cost no extra memory passes over the data; small ones
// (the recursive-doubling path) are packed into the persistent fusion buffer, where a copy is
// cheaper than a message per tensor.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "common/errors.h"

namespace dist_sync {

struct Span {
  const std::byte* in;  // this rank's contribution (may equal out: in place)
  std::byte* out;       // where the result goes (nullptr: region whose result is not wanted)
  size_t bytes;
};

class SpanList {
 public:
  SpanList() = default;
  SpanList(const void* in, void* out, size_t bytes) { add(in, out, bytes); }

  void add(const void* in, void* out, size_t bytes) {
    if (bytes == 0) return;
    starts_.push_back(total_);
    spans_.push_back(Span{static_cast<const std::byte*>(in), static_cast<std::byte*>(out), bytes});
    total_ += bytes;
  }

  size_t bytes() const { return total_; }

  // The same buffer with every span's result side as its input too: for a later stage that
  // continues from results already in out.
  SpanList results_in_place() const {
    SpanList view;
    for (const Span& span : spans_) view.add(span.out, span.out, span.bytes);
    return view;
  }

  // [offset, offset + length) of this buffer as a list of its own.
  SpanList slice(size_t offset, size_t length) const {
    SpanList view;
    for_each(offset, length, [&](const std::byte* in, std::byte* out, size_t n) { view.add(in, out, n); });
    return view;
  }
  const std::vector<Span>& spans() const { return spans_; }

  // Calls fn(in, out, bytes) for each piece of [offset, offset + length), in order.
  template <typename Fn>
  void for_each(size_t offset, size_t length, Fn&& fn) const {
    if (length == 0) return;
    DS_ASSERT(offset + length <= total_, "range beyond the buffer");
    size_t index = find(offset);
    size_t within = offset - starts_[index];
    while (length > 0) {
      const Span& span = spans_[index];
      const size_t piece = std::min(length, span.bytes - within);
      fn(span.in + within, span.out == nullptr ? nullptr : span.out + within, piece);
      length -= piece;
      within = 0;
      ++index;
    }
  }

  // If [offset, offset + length) lies inside one span, returns that piece.
  bool contiguous(size_t offset, size_t length, Span* piece) const {
    if (length == 0 || spans_.empty()) return false;
    const size_t index = find(offset);
    const size_t within = offset - starts_[index];
    const Span& span = spans_[index];
    if (within + length > span.bytes) return false;
    *piece = Span{span.in + within, span.out == nullptr ? nullptr : span.out + within, length};
    return true;
  }

  void gather_in(size_t offset, size_t length, std::byte* dst) const {
    for_each(offset, length, [&](const std::byte* in, std::byte*, size_t n) {
      std::memcpy(dst, in, n);
      dst += n;
    });
  }
  void gather_out(size_t offset, size_t length, std::byte* dst) const {
    for_each(offset, length, [&](const std::byte*, std::byte* out, size_t n) {
      std::memcpy(dst, out, n);
      dst += n;
    });
  }
  void scatter_out(size_t offset, size_t length, const std::byte* src) const {
    for_each(offset, length, [&](const std::byte*, std::byte* out, size_t n) {
      if (out != nullptr) std::memcpy(out, src, n);
      src += n;
    });
  }

 private:
  size_t find(size_t offset) const {
    const auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
    return static_cast<size_t>(it - starts_.begin()) - 1;
  }

  std::vector<Span> spans_;
  std::vector<size_t> starts_;
  size_t total_ = 0;
};

}  // namespace dist_sync

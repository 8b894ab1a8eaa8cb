#include "engine/in_flight.h"

#include <algorithm>
#include <vector>

#include "common/errors.h"

namespace dist_sync {
// The request's memory that is written (outputs) and only read (inputs that are not also the
// output of the same tensor: in place, the tensor is written).
void InFlight::split(const Request& request) const {
  written_.clear();
  read_.clear();
  for (size_t t = 0; t < request.meta.tensors.size(); ++t) {
    const size_t bytes = request.meta.tensors[t].bytes();
    if (bytes == 0) continue;
    const auto in = reinterpret_cast<uintptr_t>(t < request.inputs.size() ? request.inputs[t] : nullptr);
    const auto out = reinterpret_cast<uintptr_t>(t < request.outputs.size() ? request.outputs[t] : nullptr);
    if (out != 0) written_.push_back(Piece{out, out + bytes});
    if (in != 0 && in != out) read_.push_back(Piece{in, in + bytes});
  }
}

const std::pair<const uintptr_t, InFlight::Range>* InFlight::overlap(
    const std::multimap<uintptr_t, Range>& ranges, uintptr_t longest, uintptr_t begin,
    uintptr_t end) {
  // Candidates start in [begin - longest, end).
  auto it = ranges.lower_bound(begin > longest ? begin - longest : 0);
  for (; it != ranges.end() && it->first < end; ++it) {
    if (it->second.end > begin) return &*it;
  }
  return nullptr;
}

void InFlight::check(const Request& request, int rank) const {
  const std::string& name = request.meta.name;
  if (contains(name)) {
    throw UsageError(detail::concat(
        "an operation named '", name, "' is already in flight on rank ", rank,
        "; names must be unique among operations that have not been synchronized yet"));
  }
  split(request);
  const std::vector<Piece>& written = written_;
  auto refuse = [&](const char* what, const std::string& other, const char* how) {
    throw UsageError(detail::concat(
        "'", name, "' ", what, " memory that '", other, "' ", how, " on rank ", rank,
        " (that operation is still in flight): synchronize it first, or use another tensor"));
  };
  for (size_t i = 0; i < written.size(); ++i) {
    const Piece& piece = written[i];
    if (const auto* hit = overlap(outputs_, longest_output_, piece.begin, piece.end)) {
      refuse("would write", hit->second.name, "is writing");
    }
    if (const auto* hit = overlap(inputs_, longest_input_, piece.begin, piece.end)) {
      refuse("would write", hit->second.name, "still reads");
    }
    for (size_t j = i + 1; j < written.size(); ++j) {
      if (written[j].begin < piece.end && piece.begin < written[j].end) {
        throw UsageError(detail::concat("'", name, "' writes the same memory through two of its "
                                        "tensors on rank ", rank, "; pass distinct tensors"));
      }
    }
  }
  for (const Piece& piece : read_) {
    if (const auto* hit = overlap(outputs_, longest_output_, piece.begin, piece.end)) {
      refuse("would read", hit->second.name, "is writing");
    }
  }
}

void InFlight::add(const Request& request) {
  names_.emplace(request.meta.name, 1);
  split(request);
  for (const Piece& piece : written_) {
    outputs_.emplace(piece.begin, Range{piece.end, request.meta.name});
    longest_output_ = std::max(longest_output_, piece.end - piece.begin);
  }
  for (const Piece& piece : read_) {
    inputs_.emplace(piece.begin, Range{piece.end, request.meta.name});
    longest_input_ = std::max(longest_input_, piece.end - piece.begin);
  }
}

void InFlight::remove(const Request& request) {
  names_.erase(request.meta.name);
  auto erase = [&](std::multimap<uintptr_t, Range>& ranges, uintptr_t begin) {
    auto [first, last] = ranges.equal_range(begin);
    for (auto it = first; it != last; ++it) {
      if (it->second.name == request.meta.name) {
        ranges.erase(it);
        return;
      }
    }
  };
  split(request);
  for (const Piece& piece : written_) erase(outputs_, piece.begin);
  for (const Piece& piece : read_) erase(inputs_, piece.begin);
  if (outputs_.empty()) longest_output_ = 0;
  if (inputs_.empty()) longest_input_ = 0;
}

}  // namespace dist_sync

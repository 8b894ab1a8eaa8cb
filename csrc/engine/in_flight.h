// What this rank has in flight: the names and the memory of operations submitted and not yet
// completed. Shared between submitting threads and the engine thread (the engine holds its
// mutex around every call).
//
// Note [Memory in flight]
// A name already in flight is refused because negotiation pairs operations by name. Memory is
// refused for the same reason one level down: an operation writes its outputs at some moment
// after submission that the caller does not see, so a second operation that writes the same
// bytes, or reads bytes the first is writing, or writes bytes the first still reads, would get a
// result that depends on timing (the same array reduced in place twice gave different results
// at small and large sizes). Reading the same input from several operations is fine. Ranges are
// compared as byte intervals; empty tensors (null pointers) take no memory.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/request.h"

namespace dist_sync {

class InFlight {
 public:
  // Throws UsageError naming both operations if `request` conflicts with one in flight (or
  // with itself: two outputs of one grouped operation on the same memory).
  void check(const Request& request, int rank) const;
  void add(const Request& request);
  void remove(const Request& request);
  bool contains(const std::string& name) const { return names_.count(name) != 0; }

 private:
  struct Range {
    uintptr_t end;
    std::string name;
  };
  // The first range of `ranges` overlapping [begin, end), or nullptr. `longest` bounds how far
  // before `begin` an overlapping range can start.
  static const std::pair<const uintptr_t, Range>* overlap(
      const std::multimap<uintptr_t, Range>& ranges, uintptr_t longest, uintptr_t begin,
      uintptr_t end);

  struct Piece {
    uintptr_t begin;
    uintptr_t end;
  };
  // Fills written_ and read_ with the request's memory.
  void split(const Request& request) const;

  std::unordered_map<std::string, int> names_;  // name -> 1 (a map keeps erase cheap)
  std::multimap<uintptr_t, Range> outputs_;     // disjoint: overlapping outputs are refused
  std::multimap<uintptr_t, Range> inputs_;      // may overlap each other
  uintptr_t longest_output_ = 0;
  uintptr_t longest_input_ = 0;
  // The pieces of the request at hand, kept between calls so that their memory is reused: one
  // to three allocations per call otherwise, on every submission and completion. Safe because
  // every call happens under the engine's mutex.
  mutable std::vector<Piece> written_;
  mutable std::vector<Piece> read_;
};

}  // namespace dist_sync

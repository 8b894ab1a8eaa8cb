// Note [Response cache]
// After a request has been negotiated once, every rank remembers its metadata under a bit
// position. Next time (the next training step) a rank that submits the same name with the same
// metadata only sets that bit; one small allreduce (AND) of the bit vectors then tells every
// rank which requests are ready everywhere, with no gather of requests at the coordinator.
// Every rank applies the same insertions, evictions (least recently used) and invalidations in
// the same order, because they happen while executing the same responses; so bit positions
// agree on all ranks without ever being exchanged.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/request.h"

namespace dist_sync {

class ResponseCache {
 public:
  explicit ResponseCache(size_t capacity);

  size_t capacity() const { return entries_.size(); }
  size_t words() const { return (entries_.size() + 63) / 64; }
  size_t size() const { return by_name_.size(); }

  enum class Lookup { kMiss, kHit, kMismatch };
  // kHit: same name and signature, *bit set. kMismatch: same name, other signature, *bit set.
  Lookup lookup(const RequestMeta& meta, uint32_t* bit) const;
  const RequestMeta& meta(uint32_t bit) const;
  bool contains(uint32_t bit) const;

  // Inserts (or replaces) an entry. Returns the bits whose entries left the cache.
  std::vector<uint32_t> put(const RequestMeta& meta);
  void touch(uint32_t bit);
  void erase(uint32_t bit);

 private:
  std::vector<std::optional<RequestMeta>> entries_;  // indexed by bit
  std::unordered_map<std::string, uint32_t> by_name_;
  std::list<uint32_t> recency_;  // most recently used first
  std::vector<std::list<uint32_t>::iterator> recency_position_;
  std::set<uint32_t> free_bits_;  // lowest first, so every rank picks the same one
};

}  // namespace dist_sync

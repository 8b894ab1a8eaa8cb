#include "engine/response_cache.h"

#include "common/errors.h"

namespace dist_sync {

ResponseCache::ResponseCache(size_t capacity)
    : entries_(capacity), recency_position_(capacity) {
  for (uint32_t bit = 0; bit < capacity; ++bit) free_bits_.insert(bit);
}

ResponseCache::Lookup ResponseCache::lookup(const RequestMeta& meta, uint32_t* bit) const {
  const auto it = by_name_.find(meta.name);
  if (it == by_name_.end()) return Lookup::kMiss;
  *bit = it->second;
  return entries_[it->second]->same_signature(meta) ? Lookup::kHit : Lookup::kMismatch;
}

const RequestMeta& ResponseCache::meta(uint32_t bit) const {
  DS_ASSERT(contains(bit), "no cache entry at bit ", bit);
  return *entries_[bit];
}

bool ResponseCache::contains(uint32_t bit) const {
  return bit < entries_.size() && entries_[bit].has_value();
}

std::vector<uint32_t> ResponseCache::put(const RequestMeta& meta) {
  std::vector<uint32_t> removed;
  if (entries_.empty()) return removed;
  const auto existing = by_name_.find(meta.name);
  if (existing != by_name_.end()) {
    if (entries_[existing->second]->same_signature(meta)) {
      touch(existing->second);
      return removed;
    }
    removed.push_back(existing->second);
    erase(existing->second);
  }
  if (free_bits_.empty()) {
    const uint32_t victim = recency_.back();
    removed.push_back(victim);
    erase(victim);
  }
  const uint32_t bit = *free_bits_.begin();
  free_bits_.erase(free_bits_.begin());
  entries_[bit] = meta;
  by_name_[meta.name] = bit;
  recency_.push_front(bit);
  recency_position_[bit] = recency_.begin();
  return removed;
}

void ResponseCache::touch(uint32_t bit) {
  if (!contains(bit)) return;
  recency_.splice(recency_.begin(), recency_, recency_position_[bit]);
}

void ResponseCache::erase(uint32_t bit) {
  if (!contains(bit)) return;
  by_name_.erase(entries_[bit]->name);
  entries_[bit].reset();
  recency_.erase(recency_position_[bit]);
  free_bits_.insert(bit);
}

}  // namespace dist_sync

#include "common/page_backing.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

namespace dist_sync {
namespace {

// The PAGEMAP_SCAN interface of linux/fs.h (Linux 6.7), declared here because build hosts'
// kernel headers are often older than the kernels the library runs on.
struct PageRegion {
  uint64_t start;
  uint64_t end;
  uint64_t categories;
};
struct PagemapScanArg {
  uint64_t size;
  uint64_t flags;
  uint64_t start;
  uint64_t end;
  uint64_t walk_end;
  uint64_t vec;
  uint64_t vec_len;
  uint64_t max_pages;
  uint64_t category_inverted;
  uint64_t category_mask;
  uint64_t category_anyof_mask;
  uint64_t return_mask;
};
constexpr uint64_t kPageIsHuge = uint64_t{1} << 6;
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PagemapScanArg);

class PagemapFile {
 public:
  // Opened per map rather than once per process: a forked child must not read its parent's.
  PagemapFile() : fd_(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) {}
  ~PagemapFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  PagemapFile(const PagemapFile&) = delete;
  PagemapFile& operator=(const PagemapFile&) = delete;

  // Appends the huge-page-backed parts of [begin, end) to `huge`; false if the kernel can't say.
  bool huge_regions(uintptr_t begin, uintptr_t end,
                    std::vector<std::pair<uintptr_t, uintptr_t>>& huge) const {
    if (fd_ < 0) return false;
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    PageRegion regions[16];
    uint64_t cursor = begin & ~(page - 1);
    const uint64_t stop = (end + page - 1) & ~(page - 1);
    while (cursor < stop) {
      PagemapScanArg arg{};
      arg.size = sizeof(arg);
      arg.start = cursor;
      arg.end = stop;
      arg.vec = reinterpret_cast<uint64_t>(regions);
      arg.vec_len = sizeof(regions) / sizeof(regions[0]);
      arg.category_mask = kPageIsHuge;
      arg.return_mask = kPageIsHuge;
      const int found = ::ioctl(fd_, kPagemapScan, &arg);
      if (found < 0) return false;
      for (int i = 0; i < found; ++i) {
        huge.emplace_back(std::max<uintptr_t>(regions[i].start, begin),
                          std::min<uintptr_t>(regions[i].end, end));
      }
      if (arg.walk_end <= cursor) break;  // no progress: stop rather than loop
      cursor = arg.walk_end;
    }
    return true;
  }

 private:
  const int fd_;
};

}  // namespace

HugePageMap::HugePageMap(const std::vector<MemoryRange>& ranges) {
  if (ranges.empty()) return;
  const PagemapFile pagemap;
  for (const MemoryRange& range : ranges) {
    const auto begin = reinterpret_cast<uintptr_t>(range.data);
    if (!pagemap.huge_regions(begin, begin + range.bytes, huge_)) {
      huge_.clear();  // unknown: treat everything as small pages
      return;
    }
  }
  std::sort(huge_.begin(), huge_.end());
  // Merge overlaps (the in and out sides of an in-place tensor are one range scanned twice).
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (const auto& region : huge_) {
    if (!merged.empty() && region.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, region.second);
    } else {
      merged.push_back(region);
    }
  }
  huge_ = std::move(merged);
}

bool HugePageMap::covers(const void* data, size_t bytes) const {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  // The last region starting at or before `begin`.
  auto it = std::upper_bound(huge_.begin(), huge_.end(),
                             std::make_pair(begin, std::numeric_limits<uintptr_t>::max()));
  if (it == huge_.begin()) return false;
  --it;
  return begin >= it->first && begin + bytes <= it->second;
}

}  // namespace dist_sync

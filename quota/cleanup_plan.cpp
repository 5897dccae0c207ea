#include "quota/cleanup_plan.hpp"

#include <algorithm>

namespace artifactfs::quota {

std::vector<index::ArtifactRecord> plan_evictions(const index::Index& index, Evictor& evictor,
                                                  index::TimeNs protect_after, std::uint64_t usage,
                                                  std::uint64_t target) {
  constexpr std::size_t kPage = 1000;
  std::vector<index::ArtifactRecord> plan;
  std::optional<std::pair<index::TimeNs, index::ArtifactId>> cursor;
  while (usage > target) {
    auto page = index.least_recently_used(kPage, cursor);
    for (auto& record : page) {
      if (usage <= target) break;
      // The LRU order is by last access: the rest are younger still.
      if (record.last_access > protect_after) return plan;
      if (record.pinned || evictor.in_use(record.id)) continue;
      usage -= std::min<std::uint64_t>(usage, static_cast<std::uint64_t>(std::max<std::int64_t>(0, record.usage.disk_bytes)));
      plan.push_back(record);
    }
    if (page.size() < kPage) break;
    cursor = std::pair{page.back().last_access, page.back().id};
  }
  return plan;
}

}  // namespace artifactfs::quota

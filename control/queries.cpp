#include "control/queries.hpp"

#include <algorithm>
#include <map>

namespace artifactfs::control {

namespace {

std::uint64_t positive(std::int64_t v) { return static_cast<std::uint64_t>(std::max<std::int64_t>(0, v)); }

constexpr index::TimeNs kDay = 24LL * 3600 * 1'000'000'000;

ArtifactRow row_of(const index::ArtifactRecord& r, LiveFacts* live) {
  ArtifactRow row;
  row.key = r.name;
  row.disk_bytes = positive(r.usage.disk_bytes);
  row.apparent_bytes = positive(r.usage.apparent_bytes);
  row.files = positive(r.usage.files);
  row.created = r.created;
  row.last_access = r.last_access;
  row.access_count = r.access_count;
  row.pinned = r.pinned;
  row.open = live && live->is_open(r.id);
  return row;
}

}  // namespace

index::TimeNs now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

StatusReport make_status(const index::Index& index, const QuotaFacts& quota, LiveFacts* live, index::TimeNs now) {
  StatusReport s;
  s.now = now;
  const index::Totals totals = index.totals();
  s.usage_bytes = positive(totals.usage.disk_bytes);
  s.apparent_bytes = positive(totals.usage.apparent_bytes);
  s.files = positive(totals.usage.files);
  s.artifacts = totals.artifact_count;
  s.limit_known = quota.limit_known;
  s.limit_bytes = quota.limit_bytes;
  s.target_bytes = quota.target_bytes;
  s.backing_free_bytes = quota.backing_free_bytes;
  s.backing_capacity_bytes = quota.backing_capacity_bytes;
  s.cleanup_running = quota.cleanup_running;
  s.quota_blocked = quota.blocked;

  const index::Stats stats = index.stats();
  s.hits = stats.hits;
  s.misses = stats.misses;
  s.evictions = stats.evictions;
  s.bytes_evicted = stats.bytes_evicted;
  s.cleanup_runs = stats.cleanup_runs;
  s.cleanup_seconds = static_cast<double>(stats.cleanup_ns) / 1e9;
  const index::EvictionSummary day = index.evictions_since(now - kDay);
  s.evictions_24h = day.evictions;
  s.bytes_evicted_24h = day.disk_bytes;
  s.last_24h_complete = day.complete;

  if (auto oldest = index.least_recently_used(1); !oldest.empty()) s.oldest_access = oldest.front().last_access;

  // One pass over every record: pins are not indexed, and a status is rare
  // next to the opens the index serves (about a second per million).
  const index::TimeNs young_after =
      now - std::chrono::duration_cast<std::chrono::nanoseconds>(quota.min_age).count();
  index.for_each_with_prefix("", [&](const index::ArtifactRecord& r) {
    const std::uint64_t bytes = positive(r.usage.disk_bytes);
    const bool pinned = r.pinned;
    const bool young = quota.min_age.count() > 0 && r.last_access > young_after;
    const bool open = live && live->is_open(r.id);
    if (pinned) s.unevictable.pinned += bytes;
    if (young) s.unevictable.min_age += bytes;
    if (open) s.unevictable.open += bytes;
    if (pinned || young || open) s.unevictable.total += bytes;
  });
  return s;
}

std::vector<ArtifactRow> list_artifacts(const index::Index& index, LiveFacts* live, SortOrder order,
                                        std::size_t limit, const std::string& prefix) {
  std::vector<ArtifactRow> rows;
  if (order == SortOrder::lru && prefix.empty()) {
    // The index keeps this order: read only as many as asked for.
    std::optional<std::pair<index::TimeNs, index::ArtifactId>> cursor;
    constexpr std::size_t kPage = 1000;
    while (rows.size() < limit) {
      const std::size_t want = std::min(kPage, limit - rows.size());
      auto page = index.least_recently_used(want, cursor);
      for (const auto& r : page) rows.push_back(row_of(r, live));
      if (page.size() < want) break;
      cursor = std::pair{page.back().last_access, page.back().id};
    }
    return rows;
  }
  index.for_each_with_prefix(prefix, [&](const index::ArtifactRecord& r) { rows.push_back(row_of(r, live)); });
  auto by = [&](auto less) { std::stable_sort(rows.begin(), rows.end(), less); };
  switch (order) {
    case SortOrder::lru:
      by([](const ArtifactRow& a, const ArtifactRow& b) { return a.last_access < b.last_access; });
      break;
    case SortOrder::size:
      by([](const ArtifactRow& a, const ArtifactRow& b) { return a.disk_bytes > b.disk_bytes; });
      break;
    case SortOrder::hits:
      by([](const ArtifactRow& a, const ArtifactRow& b) { return a.access_count > b.access_count; });
      break;
    case SortOrder::name: break;  // for_each_with_prefix visits in name order
  }
  if (rows.size() > limit) rows.resize(limit);
  return rows;
}

std::vector<NamespaceRow> usage_by_namespace(const index::Index& index, int depth, const std::string& prefix) {
  std::map<std::string, NamespaceRow> groups;
  index.for_each_with_prefix(prefix, [&](const index::ArtifactRecord& r) {
    std::size_t end = 0;
    for (int i = 0; i < depth && end != std::string::npos; ++i) {
      end = r.name.find('/', i == 0 ? 0 : end + 1);
    }
    std::string name = end == std::string::npos ? r.name : r.name.substr(0, end);
    NamespaceRow& g = groups[name];
    g.name = name;
    g.disk_bytes += positive(r.usage.disk_bytes);
    g.artifacts += 1;
    g.hits += r.access_count;
    g.last_access = std::max(g.last_access, r.last_access);
  });
  std::vector<NamespaceRow> rows;
  rows.reserve(groups.size());
  for (auto& [name, row] : groups) rows.push_back(std::move(row));
  return rows;
}

}  // namespace artifactfs::control

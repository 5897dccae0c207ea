// The inspection queries, computed from an Index. The daemon adds what only
// it knows (open artifacts, the quota's limit and state) through LiveFacts;
// a read-only inspection without a daemon passes what it can (a limit from
// a configuration file) or nothing.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "control/reports.hpp"
#include "index/index.hpp"

namespace artifactfs::control {

// The quota's side of a status.
struct QuotaFacts {
  bool limit_known = false;
  std::optional<std::uint64_t> limit_bytes;  // nullopt: unlimited
  std::optional<std::uint64_t> target_bytes;
  std::optional<std::uint64_t> backing_free_bytes;
  std::optional<std::uint64_t> backing_capacity_bytes;
  bool cleanup_running = false;
  bool blocked = false;
  std::chrono::milliseconds min_age{0};
};

class LiveFacts {
 public:
  virtual ~LiveFacts() = default;
  virtual bool is_open(index::ArtifactId id) = 0;
};

enum class SortOrder { lru, size, name, hits };

StatusReport make_status(const index::Index& index, const QuotaFacts& quota, LiveFacts* live, index::TimeNs now);

// Artifacts whose key starts with `prefix`, sorted; at most `limit`.
// lru: least recently used first (the eviction order); size: largest first;
// hits: most accessed first; name: by key.
std::vector<ArtifactRow> list_artifacts(const index::Index& index, LiveFacts* live, SortOrder order,
                                        std::size_t limit, const std::string& prefix);

// Usage per namespace: keys grouped by their first `depth` components
// (a key with fewer components is its own group). Sorted by name.
std::vector<NamespaceRow> usage_by_namespace(const index::Index& index, int depth, const std::string& prefix);

index::TimeNs now_ns();

}  // namespace artifactfs::control

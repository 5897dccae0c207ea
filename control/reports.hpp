// What the inspection and control commands report, as plain structs: built
// by queries.cpp from an Index (the daemon's own, or one opened read-only
// when no daemon serves the store), carried over the control channel as
// JSON (json.cpp), and printed by the command line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "index/index.hpp"

namespace artifactfs::control {

// Bytes that no cleanup could take now, by why. An artifact that is both
// pinned and open counts in each of its reasons once, and once in `total`.
struct Unevictable {
  std::uint64_t pinned = 0;
  std::uint64_t open = 0;     // open handles or operations in progress
  std::uint64_t min_age = 0;  // opened within quota.min-age
  std::uint64_t total = 0;
};

struct StatusReport {
  std::string store;
  std::string mountpoint;       // empty when no daemon serves the store
  bool daemon_running = false;  // false: read from the index directly
  index::TimeNs now = 0;

  std::uint64_t usage_bytes = 0;  // bytes on disk, what the quota counts
  std::uint64_t apparent_bytes = 0;
  std::uint64_t files = 0;
  std::uint64_t artifacts = 0;
  // Quota: nullopt when unlimited, or unknown because no daemon runs and no
  // configuration was given.
  std::optional<std::uint64_t> limit_bytes;
  std::optional<std::uint64_t> target_bytes;
  bool limit_known = false;
  std::optional<std::uint64_t> backing_free_bytes;
  std::optional<std::uint64_t> backing_capacity_bytes;

  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t evictions = 0;
  std::uint64_t bytes_evicted = 0;
  std::uint64_t evictions_24h = 0;
  std::uint64_t bytes_evicted_24h = 0;
  bool last_24h_complete = true;  // false: the bounded log dropped some of that day
  std::uint64_t cleanup_runs = 0;
  double cleanup_seconds = 0;

  std::optional<index::TimeNs> oldest_access;  // last access of the least recently used artifact
  Unevictable unevictable;
  bool cleanup_running = false;
  bool quota_blocked = false;
};

struct ArtifactRow {
  std::string key;
  std::uint64_t disk_bytes = 0;
  std::uint64_t apparent_bytes = 0;
  std::uint64_t files = 0;
  index::TimeNs created = 0;
  index::TimeNs last_access = 0;
  std::uint64_t access_count = 0;
  bool pinned = false;
  bool open = false;
};

struct NamespaceRow {
  std::string name;  // the first `depth` components of the keys
  std::uint64_t disk_bytes = 0;
  std::uint64_t artifacts = 0;
  std::uint64_t hits = 0;  // access counts added up
  index::TimeNs last_access = 0;
};

// One key of pin, unpin or evict, or one artifact of a cleanup.
struct ActionResult {
  std::string key;
  std::string outcome;  // "pinned", "unpinned", "evicted", "would evict", "in use", "not found", "is pinned"
  bool ok = false;
  std::uint64_t disk_bytes = 0;
  index::TimeNs last_access = 0;
};

struct CleanupReport {
  bool dry_run = false;
  std::uint64_t usage_before = 0;
  std::uint64_t target = 0;
  std::uint64_t usage_after = 0;  // expected, for a dry run
  bool target_met = false;
  std::vector<ActionResult> artifacts;  // in eviction order
};

}  // namespace artifactfs::control

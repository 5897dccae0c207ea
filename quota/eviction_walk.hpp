// One pass over the index's least-recently-used order, evicting as the
// caller asks. Shared by the periodic cleanup and the ENOSPC path so that
// both apply exactly the same protections.
//
// A walk pages through the LRU table with the (last_access, id) cursor of the
// last record it saw, so each victim costs O(log n) and a walk never starts
// over from the oldest record. It is used by one thread at a time (the
// caller holds the quota manager's cleanup mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "index/index.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::quota {

class EvictionWalk {
 public:
  // Artifacts last accessed after `protect_after` are too young to evict.
  EvictionWalk(index::Index& index, Evictor& evictor, index::TimeNs protect_after, Evictor::Need need,
               std::size_t page_size = 256);

  // Evicts the least recently used artifact that is not pinned, too young or
  // in use. False once none is left.
  bool evict_next();

  std::uint64_t evicted() const { return evicted_; }
  std::uint64_t bytes_freed() const { return bytes_freed_; }
  std::uint64_t last_bytes_freed() const { return last_bytes_freed_; }
  std::uint64_t skipped_protected() const { return skipped_protected_; }

 private:
  bool next_record(index::ArtifactRecord& out);
  bool too_young(const index::ArtifactRecord& record) const { return record.last_access > protect_after_; }

  index::Index& index_;
  Evictor& evictor_;
  index::TimeNs protect_after_;
  Evictor::Need need_;
  std::size_t page_size_;

  std::vector<index::ArtifactRecord> page_;
  std::size_t position_ = 0;
  std::optional<std::pair<index::TimeNs, index::ArtifactId>> cursor_;
  bool finished_ = false;

  std::uint64_t evicted_ = 0;
  std::uint64_t bytes_freed_ = 0;
  std::uint64_t last_bytes_freed_ = 0;
  std::uint64_t skipped_protected_ = 0;
};

}  // namespace artifactfs::quota

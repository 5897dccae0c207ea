// The dry run of a cleanup: what it would evict now, in order, without
// evicting anything. Same order and protections as EvictionWalk (pinned,
// opened after `protect_after`, in use), read from the index's LRU order.
#pragma once

#include <cstdint>
#include <vector>

#include "index/index.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::quota {

// Least recently used first, until `usage` minus what they hold is at most
// `target`.
std::vector<index::ArtifactRecord> plan_evictions(const index::Index& index, Evictor& evictor,
                                                  index::TimeNs protect_after, std::uint64_t usage,
                                                  std::uint64_t target);

}  // namespace artifactfs::quota

// The quota's limit arithmetic, kept free of threads, clocks and I/O so that
// unit tests can check it with plain numbers.
#pragma once

#include <cstdint>
#include <limits>

#include "config/config.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::quota {

// Usage no setting bounds: max-size unlimited and the backing filesystem's
// size unknown.
inline constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();

struct Limits {
  std::uint64_t limit = kNoLimit;   // usage above this is over the quota
  std::uint64_t target = kNoLimit;  // a cleanup evicts until usage <= target
  // The quota thread starts a cleanup above this: halfway between target
  // and limit, so that it works ahead of the writers.
  std::uint64_t cleanup_at = kNoLimit;
  // The part of `limit` that comes from the backing filesystem's free space
  // (usage + free - min-free): the floor that no write crosses.
  std::uint64_t space_limit = kNoLimit;
};

// limit = min(max-size, usage + free - min-free), saturating at 0, where
// percentages are of the backing filesystem's capacity; target =
// floor(low-watermark * limit); cleanup_at = target + (limit - target) / 2.
// A capacity of 0 means statvfs failed: then only an absolute max-size
// applies, because "5% of unknown" and "free space unknown" would otherwise
// read as "evict everything".
Limits compute_limits(const config::QuotaSettings& settings, std::uint64_t usage, const SpaceInfo& space);

inline bool over_limit(std::uint64_t usage, const Limits& limits) { return usage > limits.limit; }
inline bool cleanup_due(std::uint64_t usage, const Limits& limits) { return usage > limits.cleanup_at; }

// Free space the backing filesystem must keep, in bytes (0 when unknown).
std::uint64_t min_free_bytes(const config::QuotaSettings& settings, const SpaceInfo& space);

}  // namespace artifactfs::quota

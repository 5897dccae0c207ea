#include "quota/limits.hpp"

#include <algorithm>
#include <cmath>

namespace artifactfs::quota {

namespace {

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) { return b > kNoLimit - a ? kNoLimit : a + b; }
std::uint64_t saturating_sub(std::uint64_t a, std::uint64_t b) { return b > a ? 0 : a - b; }

std::uint64_t watermark_of(std::uint64_t limit, double low_watermark) {
  if (limit == kNoLimit) return kNoLimit;
  // The loader rejects values outside (0, 1]; clamping keeps a bad value
  // from turning into "evict nothing" (> 1) or a negative byte count.
  long double fraction = std::clamp(static_cast<long double>(low_watermark), 0.0L, 1.0L);
  return static_cast<std::uint64_t>(std::floor(fraction * static_cast<long double>(limit)));
}

}  // namespace

std::uint64_t min_free_bytes(const config::QuotaSettings& settings, const SpaceInfo& space) {
  if (space.capacity_bytes == 0 && settings.min_free.kind == config::SizeLimit::Kind::percent) return 0;
  return settings.min_free.resolve(space.capacity_bytes).value_or(0);
}

Limits compute_limits(const config::QuotaSettings& settings, std::uint64_t usage, const SpaceInfo& space) {
  const bool capacity_known = space.capacity_bytes > 0;
  std::uint64_t limit = kNoLimit;
  std::uint64_t space_limit = kNoLimit;

  if (settings.max_size.kind == config::SizeLimit::Kind::bytes ||
      (settings.max_size.kind == config::SizeLimit::Kind::percent && capacity_known)) {
    limit = std::min(limit, settings.max_size.resolve(space.capacity_bytes).value_or(kNoLimit));
  }
  if (capacity_known) {
    // What the cache may occupy is what it has plus what is still free, less
    // the reserve: space taken by other users of the disk lowers it.
    space_limit = saturating_sub(saturating_add(usage, space.free_bytes), min_free_bytes(settings, space));
    limit = std::min(limit, space_limit);
  }
  const std::uint64_t target = watermark_of(limit, settings.low_watermark);
  const std::uint64_t cleanup_at = limit == kNoLimit ? kNoLimit : target + (limit - target) / 2;
  return {limit, target, cleanup_at, space_limit};
}

}  // namespace artifactfs::quota

// The quota's limit arithmetic, checked with plain numbers.
#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "quota/limits.hpp"

namespace q = artifactfs::quota;
namespace cfg = artifactfs::config;
using Kind = cfg::SizeLimit::Kind;

namespace {

cfg::QuotaSettings settings(cfg::SizeLimit max_size, cfg::SizeLimit min_free, double low_watermark = 0.9) {
  cfg::QuotaSettings s;
  s.max_size = max_size;
  s.min_free = min_free;
  s.low_watermark = low_watermark;
  return s;
}

cfg::SizeLimit bytes(std::uint64_t n) { return {Kind::bytes, n, 0}; }
cfg::SizeLimit percent(double p) { return {Kind::percent, 0, p}; }
cfg::SizeLimit unlimited() { return {}; }

}  // namespace

TEST_CASE("quota limits: absolute max-size bounds usage when the disk has room", "[quota][limits]") {
  auto l = q::compute_limits(settings(bytes(1000), bytes(0)), 500, {10000, 9000});
  CHECK(l.limit == 1000);
  CHECK(l.target == 900);
  CHECK_FALSE(q::over_limit(1000, l));  // at the limit is not over
  CHECK(q::over_limit(1001, l));
}

TEST_CASE("quota limits: percentage max-size is of the backing filesystem's capacity", "[quota][limits]") {
  auto l = q::compute_limits(settings(percent(10), bytes(0)), 0, {10000, 10000});
  CHECK(l.limit == 1000);
  CHECK(l.target == 900);
  // 12.5% of 1001 bytes is 125.125: rounded down, never above the setting.
  CHECK(q::compute_limits(settings(percent(12.5), bytes(0)), 0, {1001, 1001}).limit == 125);
}

TEST_CASE("quota limits: min-free dominates when the disk is nearly full", "[quota][limits]") {
  // Other users took the disk: usage 800 + free 100 - reserve 50 = 850 < 1000.
  auto l = q::compute_limits(settings(bytes(1000), bytes(50)), 800, {10000, 100});
  CHECK(l.limit == 850);
  CHECK(l.target == 765);

  // min-free as a percentage: 5% of 10000 = 500 bytes to keep free.
  l = q::compute_limits(settings(unlimited(), percent(5)), 3000, {10000, 1000});
  CHECK(l.limit == 3500);
  CHECK(q::min_free_bytes(settings(unlimited(), percent(5)), {10000, 1000}) == 500);
}

TEST_CASE("quota limits: the limit saturates at zero", "[quota][limits]") {
  // Free space below the reserve and nothing cached: the limit is 0, not a
  // wrapped-around huge number.
  auto l = q::compute_limits(settings(unlimited(), percent(5)), 0, {10000, 400});
  CHECK(l.limit == 0);
  CHECK(l.target == 0);
  CHECK(q::over_limit(1, l));
  CHECK_FALSE(q::over_limit(0, l));
}

TEST_CASE("quota limits: unlimited max-size leaves only the free-space bound", "[quota][limits]") {
  auto l = q::compute_limits(settings(unlimited(), bytes(0)), 2000, {10000, 8000});
  CHECK(l.limit == 10000);
  CHECK(l.target == 9000);
}

TEST_CASE("quota limits: an unknown capacity disables the relative bounds", "[quota][limits]") {
  // statvfs failed: capacity and free read 0. Evicting everything on that
  // basis would be wrong; an absolute max-size still holds.
  auto none = q::compute_limits(settings(percent(10), percent(5)), 5000, {0, 0});
  CHECK(none.limit == q::kNoLimit);
  CHECK(none.target == q::kNoLimit);
  CHECK_FALSE(q::over_limit(5000, none));
  CHECK(q::min_free_bytes(settings(unlimited(), percent(5)), {0, 0}) == 0);

  auto absolute = q::compute_limits(settings(bytes(4000), bytes(100)), 5000, {0, 0});
  CHECK(absolute.limit == 4000);
  CHECK(q::over_limit(5000, absolute));
}

TEST_CASE("quota limits: the watermark rounds down and is clamped to [0, 1]", "[quota][limits]") {
  CHECK(q::compute_limits(settings(bytes(1001), bytes(0), 0.5), 0, {1 << 20, 1 << 20}).target == 500);
  CHECK(q::compute_limits(settings(bytes(1000), bytes(0), 1.0), 0, {1 << 20, 1 << 20}).target == 1000);
  CHECK(q::compute_limits(settings(bytes(1000), bytes(0), 1.5), 0, {1 << 20, 1 << 20}).target == 1000);
  CHECK(q::compute_limits(settings(bytes(1000), bytes(0), -1), 0, {1 << 20, 1 << 20}).target == 0);
}

TEST_CASE("quota limits: huge values do not overflow", "[quota][limits]") {
  auto l = q::compute_limits(settings(unlimited(), bytes(0)), q::kNoLimit - 10, {q::kNoLimit, q::kNoLimit});
  CHECK(l.limit == q::kNoLimit);
}

// The eviction log kept in the index: committed with the removals, bounded
// (oldest dropped, and said so for a period it no longer covers), readable
// before its commit, and readable from an index opened read-only.
#include <catch2/catch.hpp>

#include <string>

#include "index/index.hpp"
#include "tests/unit/temp_dir.hpp"

namespace ix = artifactfs::index;
using artifactfs::testing::TempDir;

namespace {

constexpr ix::TimeNs kSecond = 1'000'000'000;

// Adds an artifact, evicts it (queued removal + log entry) at `when`.
void evict(ix::Index& index, const std::string& name, ix::TimeNs when, ix::EvictionReason reason) {
  auto id = index.add_artifact(name, when - 100 * kSecond, {4096 * 3, 10000, 2});
  index.record_access(id, when - 50 * kSecond);
  index.flush();
  auto removed = index.remove_artifact_queued(id);
  REQUIRE(removed);
  index.log_eviction(*removed, reason, when);
}

}  // namespace

TEST_CASE("eviction log: entries with their reason, committed with the removals", "[index][eviction_log]") {
  TempDir tmp;
  {
    auto index = ix::Index::open(tmp.index_dir());
    evict(*index, "a", 1000 * kSecond, ix::EvictionReason::quota);
    evict(*index, "b", 1001 * kSecond, ix::EvictionReason::manual_evict);
    // Readable before the commit.
    auto pending = index->eviction_log(0);
    REQUIRE(pending.size() == 2);
    index->commit_removals();
    auto log = index->eviction_log(0);
    REQUIRE(log.size() == 2);
    CHECK(log[0].name == "a");
    CHECK(log[0].reason == ix::EvictionReason::quota);
    CHECK(log[0].usage.disk_bytes == 4096 * 3);
    CHECK(log[0].last_access == 950 * kSecond);
    CHECK(log[0].created == 900 * kSecond);
    CHECK(log[1].name == "b");
    CHECK(log[1].reason == ix::EvictionReason::manual_evict);
    CHECK(index->eviction_log(1001 * kSecond).size() == 1);
    CHECK(index->eviction_log(0, 1).front().name == "b");  // the newest
    auto day = index->evictions_since(1000 * kSecond);
    CHECK(day.evictions == 2);
    CHECK(day.disk_bytes == 2 * 4096 * 3);
    CHECK(day.complete);
    index->close_clean();
  }
  // Kept across a reopen, and read from a read-only open that writes nothing.
  ix::IndexOptions ro;
  ro.read_only = true;
  auto reader = ix::Index::open(tmp.index_dir(), ro);
  CHECK(reader->previous_shutdown_clean());
  REQUIRE(reader->eviction_log(0).size() == 2);
  CHECK(reader->totals().artifact_count == 0);
  CHECK_THROWS_AS(reader->add_artifact("c", 1, {}), ix::IndexError);
  CHECK(ix::reason_name(ix::EvictionReason::make_room) == "make-room");
  CHECK(ix::reason_from_name("cleanup") == ix::EvictionReason::manual_cleanup);
}

TEST_CASE("eviction log: bounded, the oldest dropped and a lower bound said so", "[index][eviction_log]") {
  TempDir tmp;
  ix::IndexOptions options;
  options.eviction_log_limit = 3;
  auto index = ix::Index::open(tmp.index_dir(), options);
  for (int i = 0; i < 5; ++i) {
    evict(*index, "k" + std::to_string(i), (1000 + i) * kSecond, ix::EvictionReason::make_room);
    index->commit_removals();
  }
  auto log = index->eviction_log(0);
  REQUIRE(log.size() == 3);
  CHECK(log.front().name == "k2");
  CHECK(log.back().name == "k4");
  CHECK_FALSE(index->evictions_since(1000 * kSecond).complete);  // k0 and k1 are gone
  CHECK(index->evictions_since(1002 * kSecond).complete);
}

TEST_CASE("read-only open: refuses a directory with no index", "[index][eviction_log]") {
  TempDir tmp;
  ix::IndexOptions ro;
  ro.read_only = true;
  CHECK_THROWS_AS(ix::Index::open(tmp.index_dir(), ro), ix::IndexError);
}

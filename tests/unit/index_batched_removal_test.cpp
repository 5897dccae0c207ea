// Batched removal (eviction at scale): remove_artifact_queued hides a record
// at once and commit_removals deletes a batch in one transaction; the name is
// free meanwhile; a kill -9 before the commit leaves the records; readers
// racing removals and commits never see a removed record; and the eviction
// walk commits its removals per batch and prepares each page once.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "index/index.hpp"
#include "quota/eviction_walk.hpp"
#include "quota/quota_manager.hpp"

namespace ix = artifactfs::index;
namespace q = artifactfs::quota;
using ix::ArtifactId;
using ix::Index;
using ix::Usage;

using artifactfs::testing::TempDir;

namespace {

std::vector<ArtifactId> lru_ids(const Index& index, std::size_t limit = 100000) {
  std::vector<ArtifactId> ids;
  for (const auto& r : index.least_recently_used(limit)) ids.push_back(r.id);
  return ids;
}

std::string key(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "ns/%06d", i);
  return buf;
}

}  // namespace

TEST_CASE("batched removal: the record is gone for every reader at once", "[index][batched]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  ArtifactId a = index->add_artifact("ns/a", 10, {4096, 100, 1});
  ArtifactId b = index->add_artifact("ns/b", 20, {8192, 200, 2});
  index->charge(a, {4096, 10, 1});  // pending: merged into what the removal returns
  index->record_access(a, 15);
  REQUIRE(index->totals().artifact_count == 2);

  auto removed = index->remove_artifact_queued(a);
  REQUIRE(removed);
  CHECK(removed->name == "ns/a");
  CHECK(removed->usage == Usage{8192, 110, 2});
  CHECK(removed->last_access == 15);
  CHECK(index->queued_removals() == 1);

  CHECK_FALSE(index->find("ns/a"));
  CHECK_FALSE(index->get(a));
  CHECK(lru_ids(*index) == std::vector<ArtifactId>{b});
  std::vector<std::string> names;
  index->for_each_with_prefix("ns/", [&](const ix::ArtifactRecord& r) { names.push_back(r.name); });
  CHECK(names == std::vector<std::string>{"ns/b"});
  CHECK(index->totals().artifact_count == 1);
  // Totals are the caller's business, as with remove_artifact.
  CHECK(index->totals().usage == Usage{});

  // Removed already: neither call removes (or counts) it again.
  CHECK_FALSE(index->remove_artifact_queued(a));
  CHECK_FALSE(index->remove_artifact(a));
  CHECK(index->totals().artifact_count == 1);
  CHECK_FALSE(index->remove_artifact_queued(9999));

  CHECK(index->commit_removals() == 1);
  CHECK(index->queued_removals() == 0);
  CHECK_FALSE(index->get(a));
  CHECK_FALSE(index->find("ns/a"));
  CHECK(index->totals().artifact_count == 1);
  CHECK(index->commit_removals() == 0);

  index->close_clean();
  index.reset();
  index = Index::open(tmp.index_dir());
  CHECK_FALSE(index->find("ns/a"));
  CHECK(index->find("ns/b") == b);
  CHECK(index->totals().artifact_count == 1);
}

TEST_CASE("batched removal: the name is free before the commit", "[index][batched]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  ArtifactId a = index->add_artifact("ns/a", 10, {4096, 100, 1});
  ArtifactId c = index->add_artifact("ns/c", 30, {4096, 100, 1});
  REQUIRE(index->remove_artifact_queued(a));

  std::size_t expected = 0;
  SECTION("a new artifact takes the name") {
    expected = 2;
    ArtifactId a2 = index->add_artifact("ns/a", 40, {0, 0, 0});
    CHECK(a2 != a);
    CHECK(index->find("ns/a") == a2);
    CHECK(index->totals().artifact_count == 2);
    // The queued removal's commit must not take the new record's name.
    CHECK(index->commit_removals() == 0);  // the record went with add_artifact's transaction
    CHECK(index->find("ns/a") == a2);
    CHECK(index->get(a2));
    CHECK_FALSE(index->get(a));
  }
  SECTION("a rename takes the name") {
    expected = 1;
    index->rename_artifact(c, "ns/a");
    CHECK(index->find("ns/a") == c);
    CHECK_FALSE(index->find("ns/c"));
    index->commit_removals();
    CHECK(index->find("ns/a") == c);
    CHECK(index->get(c)->name == "ns/a");
    CHECK_FALSE(index->get(a));
  }
  index->flush();
  index->close_clean();
  index.reset();
  index = Index::open(tmp.index_dir());
  CHECK(index->totals().artifact_count == expected);
  CHECK(index->find("ns/a"));
  CHECK(lru_ids(*index).size() == expected);
}

TEST_CASE("batched removal: commit_removals leaves access times to flush()", "[index][batched]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  ArtifactId a = index->add_artifact("ns/a", 10, {});
  ArtifactId b = index->add_artifact("ns/b", 20, {});
  index->record_access(b, 50);
  REQUIRE(index->remove_artifact_queued(a));
  index->count(ix::Stat::evictions);
  CHECK(index->commit_removals() == 1);
  CHECK(index->get(b)->last_access == 50);  // still pending, merged
  // The flush thread still sees (and reports) the access.
  CHECK(index->flush() == std::vector<ArtifactId>{b});
  CHECK(index->stats().evictions == 1);
}

TEST_CASE("batched removal: a full flush commits queued removals too", "[index][batched]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  for (int i = 0; i < 10; ++i) index->add_artifact(key(i), i, {4096, 1, 1});
  for (int i = 0; i < 10; i += 2) REQUIRE(index->remove_artifact_queued(*index->find(key(i))));
  CHECK(index->queued_removals() == 5);
  index->flush();
  CHECK(index->queued_removals() == 0);
  CHECK(index->commit_removals() == 0);
  CHECK(lru_ids(*index).size() == 5);
}

TEST_CASE("batched removal: LRU pages and prefix chunks stay full around removed records", "[index][batched]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  constexpr int kN = 2500;  // more than one chunk of for_each_with_prefix (1000)
  std::vector<ArtifactId> ids;
  for (int i = 0; i < kN; ++i) ids.push_back(index->add_artifact(key(i), 1000 + i, {4096, 1, 1}));
  // Remove every third one, including a long run at the start of the LRU order.
  std::set<ArtifactId> removed;
  for (int i = 0; i < kN; ++i) {
    if (i < 600 || i % 3 == 0) {
      REQUIRE(index->remove_artifact_queued(ids[i]));
      removed.insert(ids[i]);
    }
  }
  // A page is short only at the end of the table.
  auto page = index->least_recently_used(100);
  REQUIRE(page.size() == 100);
  for (const auto& r : page) CHECK(removed.count(r.id) == 0);
  std::size_t visited = 0;
  std::optional<std::pair<ix::TimeNs, ArtifactId>> after;
  for (;;) {
    auto p = index->least_recently_used(256, after);
    for (const auto& r : p) CHECK(removed.count(r.id) == 0);
    visited += p.size();
    if (p.size() < 256) break;
    after = std::pair{p.back().last_access, p.back().id};
  }
  CHECK(visited == kN - removed.size());
  std::size_t by_prefix = 0;
  index->for_each_with_prefix("ns/", [&](const ix::ArtifactRecord& r) {
    CHECK(removed.count(r.id) == 0);
    ++by_prefix;
  });
  CHECK(by_prefix == kN - removed.size());
  CHECK(index->totals().artifact_count == kN - removed.size());
  CHECK(index->commit_removals() == removed.size());
  CHECK(lru_ids(*index).size() == kN - removed.size());
}

TEST_CASE("batched removal: a kill -9 before the commit leaves the records", "[index][batched][durability]") {
  TempDir tmp;
  auto dir = tmp.index_dir();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      auto index = Index::open(dir);
      for (int i = 0; i < 6; ++i) index->add_artifact(key(i), i, {4096, 1, 1});
      index->charge_total({6 * 4096, 6, 6});
      index->flush();
      // Committed: 0 and 1. Queued only: 2 and 3.
      for (int i = 0; i < 4; ++i) {
        auto r = index->remove_artifact_queued(*index->find(key(i)));
        index->charge_total(-r->usage);
        index->count(ix::Stat::evictions);
        if (i == 1) {
          index->commit_removals();
          index->flush();
        }
      }
      kill(getpid(), SIGKILL);
    } catch (...) {
    }
    _exit(3);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));

  auto index = Index::open(dir);
  CHECK_FALSE(index->previous_shutdown_clean());
  CHECK_FALSE(index->find(key(0)));
  CHECK_FALSE(index->find(key(1)));
  CHECK(index->find(key(2)));  // the trash repairs these (fs/trash.hpp)
  CHECK(index->find(key(3)));
  CHECK(index->totals().artifact_count == 4);
  CHECK(index->stats().evictions == 2);
  // What was committed together: the records and the totals without them.
  CHECK(index->totals().usage == Usage{4 * 4096, 4, 4});
}

TEST_CASE("batched removal: readers racing removals and commits never see a removed record",
          "[index][batched][threads]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  constexpr int kN = 3000;
  std::vector<ArtifactId> ids;
  for (int i = 0; i < kN; ++i) ids.push_back(index->add_artifact(key(i), i, {4096, 1, 1}));
  std::vector<std::atomic<bool>> gone(kN + 1);  // by index into ids
  std::map<ArtifactId, int> slot;
  for (int i = 0; i < kN; ++i) slot[ids[i]] = i;
  std::atomic<bool> done{false};
  std::atomic<int> violations{0};

  std::thread remover([&] {
    for (int i = 0; i < kN; i += 2) {
      REQUIRE(index->remove_artifact_queued(ids[i]));
      gone[i] = true;
      if (i % 200 == 0) index->commit_removals();
    }
    done = true;
  });
  std::thread flusher([&] {
    while (!done) {
      index->record_access(ids[1], 5);
      index->flush();
    }
  });
  std::thread reader([&] {
    while (!done) {
      // Removed before the read began: must not be seen.
      std::vector<bool> before(kN);
      for (int i = 0; i < kN; i += 2) before[i] = gone[i];
      for (const auto& r : index->least_recently_used(kN)) {
        if (before[slot[r.id]]) ++violations;
      }
      for (int i = 0; i < kN; i += 97) {
        bool was_gone = gone[i];
        if (was_gone && (index->find(key(i)) || index->get(ids[i]))) ++violations;
      }
    }
  });
  remover.join();
  flusher.join();
  reader.join();
  CHECK(violations == 0);
  index->commit_removals();
  CHECK(lru_ids(*index).size() == kN / 2);
  CHECK(index->totals().artifact_count == kN / 2);
}

namespace {

// Evicts as the file system does: queued removal, totals, statistics; counts
// how many removals were queued at each call and the prepared pages.
class QueuedEvictor : public q::Evictor {
 public:
  explicit QueuedEvictor(Index& index) : index_(index) {}
  q::EvictOutcome evict(ArtifactId id, Usage& freed, Need, artifactfs::index::EvictionReason) override {
    max_queued = std::max(max_queued, index_.queued_removals());
    auto removed = index_.remove_artifact_queued(id);
    if (!removed) return q::EvictOutcome::missing;
    index_.charge_total(-removed->usage);
    index_.count(ix::Stat::evictions);
    freed = removed->usage;
    ++evicted;
    return q::EvictOutcome::evicted;
  }
  std::shared_ptr<void> prepare(const std::vector<ArtifactId>& candidates) override {
    prepared += candidates.size();
    ++pages;
    return std::make_shared<int>(0);
  }
  q::SpaceInfo backing_space() override { return {}; }
  void wait_for_deletions() override {}

  std::size_t max_queued = 0;
  std::size_t evicted = 0;
  std::size_t prepared = 0;
  std::size_t pages = 0;

 private:
  Index& index_;
};

}  // namespace

TEST_CASE("eviction walk: commits its removals per batch and prepares each page once", "[quota][batched]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  constexpr int kN = 2600;
  for (int i = 0; i < kN; ++i) index->add_artifact(key(i), 1000 + i, {4096, 1, 1});
  index->charge_total({kN * 4096LL, kN, kN});
  QueuedEvictor evictor(*index);
  {
    q::EvictionWalk walk(*index, evictor, /*protect_after=*/1000 + 2000, std::chrono::nanoseconds(0), q::Evictor::Need::cleanup,
                         artifactfs::index::EvictionReason::quota,
                         q::EvictionWalk::kBatchSize);
    while (walk.evict_next()) {
    }
    CHECK(walk.evicted() == 2001);  // last_access 1000..3000 are old enough
    CHECK(index->queued_removals() <= q::EvictionWalk::kBatchSize);
    walk.commit();
    CHECK(index->queued_removals() == 0);
  }
  CHECK(evictor.max_queued < q::EvictionWalk::kBatchSize);
  CHECK(evictor.pages == 3);  // 1000 + 1000 + the page holding the first young one
  CHECK(index->totals().artifact_count == kN - 2001);
  CHECK(index->stats().evictions == 2001);
  CHECK(index->totals().usage == Usage{(kN - 2001) * 4096LL, kN - 2001, kN - 2001});

  // The destructor commits what a walk left queued.
  {
    q::EvictionWalk walk(*index, evictor, /*protect_after=*/1000 + kN, std::chrono::nanoseconds(0), q::Evictor::Need::cleanup,
                         artifactfs::index::EvictionReason::quota);
    REQUIRE(walk.evict_next());
    CHECK(index->queued_removals() == 1);
  }
  CHECK(index->queued_removals() == 0);
  index->close_clean();
}

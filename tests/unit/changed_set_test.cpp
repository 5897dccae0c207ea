// The index's changed set (CHANGED SET in index/index.hpp): a key is
// committed before begin_change() returns, stays while its change is in
// progress, is cleared by the first flush after it ended, is never lost to a
// racing flush, survives a kill -9, and is trusted only when it may be.
// Tombstones keep committed totals equal to committed records.
#include <catch2/catch.hpp>

#include <lmdb.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "index/index.hpp"

namespace ix = artifactfs::index;
using ix::Index;
using ix::Usage;
using Key = ix::Index::ChangeKey;
using artifactfs::testing::TempDir;

namespace {

// Dies at once, with every object of the caller alive: no destructor, no
// flush, no close.
[[noreturn]] void die() {
  kill(getpid(), SIGKILL);
  for (;;) pause();
}

bool has_artifact(const Index::ChangedSet& set, ix::ArtifactId id) {
  return std::find(set.artifacts.begin(), set.artifacts.end(), id) != set.artifacts.end() ||
         set.tombstones.count(id) > 0;
}

bool has_path(const Index::ChangedSet& set, const std::string& path) {
  return std::find(set.paths.begin(), set.paths.end(), path) != set.paths.end();
}

bool empty(const Index::ChangedSet& set) {
  return set.artifacts.empty() && set.tombstones.empty() && set.paths.empty() && !set.outside && !set.links;
}

// An index that keeps its changed set, as after a mount's first full walk.
std::unique_ptr<Index> kept_index(const std::filesystem::path& dir) {
  auto index = Index::open(dir);
  index->full_walk_done({});
  return index;
}

// Runs `body` in a child that then dies by SIGKILL, with no flush and no
// close; returns after the child is gone.
void in_killed_child(const std::function<void()>& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      body();
      kill(getpid(), SIGKILL);
    } catch (...) {
    }
    _exit(3);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
}

void set_raw_meta(const std::filesystem::path& dir, const std::string& key, const std::string& value) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 16) == 0);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi meta;
  REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<char*>(value.data())};
  REQUIRE(mdb_put(txn, meta, &k, &v, 0) == 0);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

}  // namespace

TEST_CASE("changed set: marked before the change, cleared by the first flush after it", "[changed_set]") {
  TempDir tmp;
  auto index = kept_index(tmp.index_dir());
  auto a = index->add_artifact("a", 1, {});
  CHECK(empty(index->changed_set()));
  {
    auto change = index->begin_change({Key::artifact(a), Key::outside(), Key::path("a")});
    auto set = index->changed_set();  // what a crash now would leave
    CHECK(has_artifact(set, a));
    CHECK(set.outside);
    CHECK(has_path(set, "a"));
    index->charge_together({{a, {4096, 10, 1}}}, {4096, 10, 1});
    index->flush();  // in progress: kept
    CHECK(has_artifact(index->changed_set(), a));
    // The same key again (the hot path): nothing to write, still there.
    auto again = index->begin_change({Key::artifact(a)});
    CHECK(has_artifact(index->changed_set(), a));
  }
  // Ended after its charges: the next flush commits them and clears it.
  CHECK(has_artifact(index->changed_set(), a));
  index->flush();
  CHECK(empty(index->changed_set()));
  CHECK(index->get(a)->usage == Usage{4096, 10, 1});

  // A change with nothing to charge is cleared too (flush with an empty batch).
  { auto change = index->begin_change({Key::path("x")}); }
  CHECK(has_path(index->changed_set(), "x"));
  index->flush();
  CHECK(empty(index->changed_set()));
}

TEST_CASE("changed set: a mark taken while a flush clears it is never lost", "[changed_set][threads]") {
  TempDir tmp;
  auto index = kept_index(tmp.index_dir());
  // More keys than writers: at each batch swap some keys are idle (a flush
  // takes them to delete their rows) and a writer may begin a change on one
  // of them before that flush's transaction decides.
  std::vector<ix::ArtifactId> ids;
  for (int i = 0; i < 16; ++i) ids.push_back(index->add_artifact("a" + std::to_string(i), 1, {}));
  std::atomic<bool> stop{false};
  std::atomic<long> flushes{0};
  std::atomic<int> lost{0};
  std::atomic<long> checked{0};
  std::thread flusher([&] {
    while (!stop) {
      index->flush();
      ++flushes;
    }
  });
  // Big batches: the time between a flush's swap and its decision grows.
  std::vector<ix::ArtifactId> noise;
  for (int i = 0; i < 3000; ++i) noise.push_back(index->add_artifact("noise" + std::to_string(i), 1, {}));
  std::thread noisy([&] {
    for (std::size_t i = 0; !stop; ++i) index->record_access(noise[i % noise.size()], static_cast<ix::TimeNs>(i));
  });
  constexpr int kWriters = 4;
  constexpr int kChanges = 1500;
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      for (int n = 0; n < kChanges; ++n) {
        ix::ArtifactId id = ids[(t * 7 + n * 5) % ids.size()];
        // Every key keeps a row between changes until a flush clears it, so
        // that begin_change often meets a row a flush is clearing.
        auto change = index->begin_change({Key::artifact(id)});
        // From here to the end of the change the row must be committed,
        // whatever the flusher does meanwhile: a crash here needs it.
        const long seen = flushes;
        if (!has_artifact(index->changed_set(), id)) ++lost;
        index->charge_together({{id, {1, 1, 0}}}, {1, 1, 0});
        // Now and then hold the change across a flush or two.
        if (n % 16 == 0) {
          for (int spin = 0; spin < 100000 && flushes < seen + 2; ++spin) std::this_thread::yield();
        }
        if (!has_artifact(index->changed_set(), id)) ++lost;
        checked += 2;
      }
    });
  }
  for (auto& w : writers) w.join();
  stop = true;
  flusher.join();
  noisy.join();
  CHECK(checked == kWriters * kChanges * 2);
  CHECK(lost == 0);
  // All ended: the next flushes commit every charge and clear every row.
  index->flush();
  index->flush();
  CHECK(empty(index->changed_set()));
  Usage sum;
  for (auto id : ids) sum += index->get(id)->usage;
  CHECK(sum == Usage{kWriters * kChanges, kWriters * kChanges, 0});
  CHECK(index->totals().usage == sum);
}

TEST_CASE("changed set: survives a kill -9 of the process that marked", "[changed_set][durability]") {
  TempDir tmp;
  auto dir = tmp.index_dir();
  ix::ArtifactId a = 0, b = 0;
  {
    auto index = kept_index(dir);
    a = index->add_artifact("a", 1, {100, 100, 1});
    b = index->add_artifact("b", 1, {200, 200, 1});
    index->charge_total({300, 300, 2});
    index->close_clean();
  }
  in_killed_child([&] {
    auto index = Index::open(dir);
    // b: changed and flushed before the kill (cleared); a: in progress.
    {
      auto change = index->begin_change({Key::artifact(b)});
      index->charge_together({{b, {1, 1, 0}}}, {1, 1, 0});
    }
    index->flush();
    auto change = index->begin_change({Key::artifact(a), Key::path("ns/new"), Key::outside()});
    index->charge_together({{a, {5, 5, 0}}}, {5, 5, 0});  // never flushed
    die();
  });
  auto index = Index::open(dir);
  CHECK_FALSE(index->previous_shutdown_clean());
  auto set = index->changed_set();
  CHECK(set.usable);
  CHECK(has_artifact(set, a));
  CHECK_FALSE(has_artifact(set, b));
  CHECK(has_path(set, "ns/new"));
  CHECK(set.outside);
  CHECK_FALSE(set.links);
}

TEST_CASE("changed set: trusted only after a crash of the daemon alone", "[changed_set][durability]") {
  TempDir tmp;
  auto dir = tmp.index_dir();
  SECTION("an index that never had a full walk (older artifactfs) is not trusted") {
    { auto index = Index::open(dir); }
    auto index = Index::open(dir);
    CHECK_FALSE(index->changed_set().usable);
  }
  SECTION("clean shutdown: nothing to recover") {
    { kept_index(dir)->close_clean(); }
    auto index = Index::open(dir);
    CHECK(index->previous_shutdown_clean());
    CHECK_FALSE(index->changed_set().usable);
    CHECK(empty(index->changed_set()));
  }
  SECTION("kill -9: trusted, and again after a second kill before any walk") {
    { kept_index(dir)->close_clean(); }
    in_killed_child([&] { auto index = Index::open(dir);  die(); });
    { CHECK(Index::open(dir)->changed_set().usable); }  // destroyed without close: unclean again
    CHECK(Index::open(dir)->changed_set().usable);
  }
  SECTION("mark_inconsistent: a change the set may not cover") {
    { kept_index(dir)->close_clean(); }
    in_killed_child([&] {
      auto index = Index::open(dir);
      index->mark_inconsistent();
      die();
    });
    auto index = Index::open(dir);
    CHECK_FALSE(index->changed_set().usable);
  }
  SECTION("the system restarted (boot id differs): a power loss may have lost marks") {
    { kept_index(dir)->close_clean(); }
    in_killed_child([&] { auto index = Index::open(dir);  die(); });
    set_raw_meta(dir, "boot_id", "00000000-0000-0000-0000-000000000000");
    auto index = Index::open(dir);
    CHECK_FALSE(index->previous_shutdown_clean());
    CHECK_FALSE(index->changed_set().usable);
  }
  SECTION("a full walk that did not finish") {
    { kept_index(dir)->close_clean(); }
    in_killed_child([&] {
      auto index = Index::open(dir);
      auto rebuild = index->begin_rebuild();
      rebuild->artifact("x", {}, 1);
      die();
    });
    auto index = Index::open(dir);
    CHECK_FALSE(index->changed_set().usable);
  }
}

TEST_CASE("changed set: tombstones keep committed totals equal to committed records", "[changed_set]") {
  TempDir tmp;
  auto dir = tmp.index_dir();
  // Committed totals minus tombstones == committed records + outside: what a
  // recovery relies on, checked at every point a kill -9 might hit.
  auto consistent = [&] {
    auto index = Index::open(dir);
    Usage records;
    index->for_each_with_prefix("", [&](const ix::ArtifactRecord& r) { records += r.usage; });
    records += index->outside_usage();
    Usage totals = index->totals().usage;
    for (const auto& [id, u] : index->changed_set().tombstones) totals += -u;
    CHECK(totals == records);
  };
  ix::ArtifactId a = 0;
  {
    auto index = kept_index(dir);
    a = index->add_artifact("a", 1, {});
    index->charge_together({{a, {8192, 8000, 2}}}, {8192, 8000, 2});
    index->add_artifact("b", 1, {});
    index->close_clean();
  }
  const Usage a_usage{8192, 8000, 2};
  SECTION("remove_artifact, killed before the flush") {
    in_killed_child([&] {
      auto index = Index::open(dir);
      auto change = index->begin_change({Key::artifact(a)});
      index->charge_together({{a, {4096, 10, 1}}}, {4096, 10, 1});  // pending when removed
      auto removed = index->remove_artifact(a);
      index->charge_together({{a, -removed->usage}}, -removed->usage);
      die();
    });
    consistent();
    CHECK(Index::open(dir)->changed_set().tombstones.at(a) == a_usage);
  }
  SECTION("remove_artifact, killed after a flush while the change was in progress") {
    in_killed_child([&] {
      auto index = Index::open(dir);
      auto change = index->begin_change({Key::artifact(a)});
      index->charge_together({{a, {4096, 10, 1}}}, {4096, 10, 1});
      auto removed = index->remove_artifact(a);
      index->flush();  // commits the pending delta to the tombstone
      index->charge_together({{a, -removed->usage}}, -removed->usage);
      die();
    });
    consistent();
  }
  SECTION("remove_artifact, flushed: the tombstone went to zero and was cleared") {
    in_killed_child([&] {
      auto index = Index::open(dir);
      {
        auto change = index->begin_change({Key::artifact(a)});
        auto removed = index->remove_artifact(a);
        index->charge_together({{a, -removed->usage}}, -removed->usage);
      }
      index->flush();
      die();
    });
    consistent();
    CHECK(empty(Index::open(dir)->changed_set()));
  }
  SECTION("queued removal (eviction batches): committed without totals, then flushed") {
    in_killed_child([&] {
      auto index = Index::open(dir);
      auto change = index->begin_change({Key::artifact(a)});
      auto removed = index->remove_artifact_queued(a);
      index->charge_together({{a, -removed->usage}}, -removed->usage);
      index->commit_removals();
      die();
    });
    consistent();
  }
  SECTION("queued removal, committed and flushed") {
    in_killed_child([&] {
      auto index = Index::open(dir);
      {
        auto change = index->begin_change({Key::artifact(a)});
        auto removed = index->remove_artifact_queued(a);
        index->charge_together({{a, -removed->usage}}, -removed->usage);
        index->commit_removals();
      }
      index->flush();
      index->flush();
      die();
    });
    consistent();
    CHECK(empty(Index::open(dir)->changed_set()));
  }
  SECTION("charges taken after the swap are not in the committed totals") {
    in_killed_child([&] {
      auto index = Index::open(dir);
      auto change = index->begin_change({Key::artifact(a), Key::outside()});
      index->charge_together({{a, {4096, 1, 1}}}, {4096, 1, 1});
      index->charge_together({{ix::kOutside, {4096, 2, 1}}}, {4096, 2, 1});
      index->flush();
      index->charge_together({{a, {4096, 3, 1}}}, {4096, 3, 1});  // lost with the process
      die();
    });
    consistent();
  }
}

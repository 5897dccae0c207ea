// Index durability: the clean flag, surviving kill -9, map growth, and
// refusing files that are not a usable index.
#include <catch2/catch.hpp>

#include <lmdb.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/unit/temp_dir.hpp"
#include "index/index.hpp"

namespace ix = artifactfs::index;
using ix::Index;
using ix::Usage;

using artifactfs::testing::TempDir;

namespace {

// Opens the environment with plain LMDB calls, to damage it on purpose.
void with_raw_env(const std::filesystem::path& dir, const std::function<void(MDB_txn*)>& fn) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 8) == 0);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  fn(txn);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

template <typename Fn>
std::string corrupt_message(Fn&& fn) {
  try {
    fn();
  } catch (const ix::IndexCorrupt& e) {
    return e.what();
  }
  return "no IndexCorrupt thrown";
}

}  // namespace

TEST_CASE("index: clean flag tracks close_clean", "[index]") {
  TempDir tmp;
  {
    auto index = Index::open(tmp.index_dir());
    CHECK(index->previous_shutdown_clean());  // brand new
    index->add_artifact("a", 1, {});
  }  // destroyed without close_clean
  {
    auto index = Index::open(tmp.index_dir());
    CHECK_FALSE(index->previous_shutdown_clean());
    CHECK(index->find("a"));
    index->close_clean();
  }
  {
    auto index = Index::open(tmp.index_dir());
    CHECK(index->previous_shutdown_clean());
  }  // not closed cleanly again
  auto index = Index::open(tmp.index_dir());
  CHECK_FALSE(index->previous_shutdown_clean());
}

TEST_CASE("index: kill -9 keeps flushed data and reports the crash", "[index]") {
  TempDir tmp;
  auto dir = tmp.index_dir();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: no Catch2 here, only the index and a hard death.
    try {
      auto index = Index::open(dir);
      auto a = index->add_artifact("a", 10, {100, 100, 1});
      auto b = index->add_artifact("b", 20, {200, 200, 1});
      index->record_access(a, 30);
      index->record_access(a, 31);
      index->charge_total({300, 300, 2});
      index->count(ix::Stat::hits, 2);
      index->flush();
      index->set_pinned(b, true);
      // Recorded but never flushed: lost with the process.
      index->record_access(b, 99);
      index->charge(a, {1, 1, 1});
      index->count(ix::Stat::hits, 5);
      kill(getpid(), SIGKILL);
    } catch (...) {
    }
    _exit(3);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);

  auto index = Index::open(dir);
  CHECK_FALSE(index->previous_shutdown_clean());
  auto a = index->find("a");
  auto b = index->find("b");
  REQUIRE(a);
  REQUIRE(b);
  auto ra = index->get(*a);
  CHECK(ra->access_count == 2);
  CHECK(ra->last_access == 31);
  CHECK(ra->usage == Usage{100, 100, 1});
  auto rb = index->get(*b);
  CHECK(rb->pinned);  // structural changes are committed at once
  CHECK(rb->last_access == 20);
  CHECK(rb->access_count == 0);
  CHECK(index->totals().usage == Usage{300, 300, 2});
  CHECK(index->totals().artifact_count == 2);
  CHECK(index->stats().hits == 2);
}

TEST_CASE("index: a tiny map grows instead of failing", "[index]") {
  TempDir tmp;
  ix::IndexOptions options;
  options.initial_map_size = 64 << 10;
  constexpr int kArtifacts = 50000;
  {
    auto index = Index::open(tmp.index_dir(), options);
    for (int i = 0; i < kArtifacts; ++i) {
      index->add_artifact("cas/" + std::to_string(i % 256) + "/" + std::to_string(i), i, {4096, 100, 1});
    }
    for (int i = 0; i < kArtifacts; i += 7) index->record_access(i + 1, kArtifacts + i);
    index->flush();
    CHECK(index->totals().artifact_count == kArtifacts);
    index->close_clean();
  }
  auto index = Index::open(tmp.index_dir(), options);
  CHECK(index->totals().artifact_count == kArtifacts);
  CHECK(index->find("cas/255/49919"));
  auto lru = index->least_recently_used(3);
  REQUIRE(lru.size() == 3);
  CHECK(lru[0].name == "cas/1/1");  // "cas/0/0" was accessed later, "cas/1/1" is now oldest
  CHECK(std::filesystem::file_size(tmp.index_dir() / "data.mdb") > (64u << 10));
}

TEST_CASE("index: garbage in data.mdb is reported as corrupt", "[index]") {
  TempDir tmp;
  {
    auto index = Index::open(tmp.index_dir());
    index->add_artifact("a", 1, {});
    index->close_clean();
  }
  {
    std::fstream f(tmp.index_dir() / "data.mdb", std::ios::in | std::ios::out | std::ios::binary);
    std::string garbage(16384, '\x5a');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  auto msg = corrupt_message([&] { Index::open(tmp.index_dir()); });
  CHECK_THAT(msg, Catch::Contains("data.mdb"));
  CHECK_THAT(msg, !Catch::Contains("no IndexCorrupt"));
}

TEST_CASE("index: a wrong schema version is reported as corrupt", "[index]") {
  TempDir tmp;
  { Index::open(tmp.index_dir())->close_clean(); }
  with_raw_env(tmp.index_dir(), [](MDB_txn* txn) {
    MDB_dbi meta;
    REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
    std::string key = "schema_version";
    unsigned char v[8] = {99, 0, 0, 0, 0, 0, 0, 0};
    MDB_val k{key.size(), key.data()}, d{sizeof v, v};
    REQUIRE(mdb_put(txn, meta, &k, &d, 0) == 0);
  });
  auto msg = corrupt_message([&] { Index::open(tmp.index_dir()); });
  CHECK_THAT(msg, Catch::Contains("schema version 99"));
  CHECK_THAT(msg, Catch::Contains("data.mdb"));
}

TEST_CASE("index: an LMDB environment of some other program is refused", "[index]") {
  TempDir tmp;
  std::filesystem::create_directories(tmp.index_dir());
  with_raw_env(tmp.index_dir(), [](MDB_txn* txn) {
    MDB_dbi main;
    REQUIRE(mdb_dbi_open(txn, nullptr, 0, &main) == 0);
    std::string key = "hello", value = "world";
    MDB_val k{key.size(), key.data()}, d{value.size(), value.data()};
    REQUIRE(mdb_put(txn, main, &k, &d, 0) == 0);
  });
  auto msg = corrupt_message([&] { Index::open(tmp.index_dir()); });
  CHECK_THAT(msg, Catch::Contains("table 'meta' is missing"));
}

TEST_CASE("index: an unusable directory is an IndexError, not corruption", "[index]") {
  TempDir tmp;
  std::ofstream(tmp.path() / "file") << "x";
  auto bad = tmp.path() / "file" / "index";
  try {
    Index::open(bad);
    FAIL("open succeeded below a regular file");
  } catch (const ix::IndexCorrupt&) {
    FAIL("IndexCorrupt for a path problem");
  } catch (const ix::IndexError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains(bad.string()));
  }
  CHECK_THROWS_AS(Index::open(tmp.path() / "file"), ix::IndexError);
}

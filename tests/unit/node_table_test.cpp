// The node table: places are pending until flushed, read back merged,
// removed, kept across a reopen, and a batch being flushed stays visible.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "index/node_table.hpp"
#include "tests/unit/temp_dir.hpp"

namespace ix = artifactfs::index;

TEST_CASE("node table: places are found before and after a flush, and after a reopen", "[nodes]") {
  artifactfs::testing::TempDir tmp;
  const auto dir = tmp.path() / "nodes";
  {
    auto nodes = ix::NodeTable::open(dir);
    CHECK_FALSE(nodes->find(42));
    nodes->placed(42, {7, "file", std::string("\x01\0\0\0abcdefgh", 12)});
    nodes->placed(43, {7, "other", ""});
    REQUIRE(nodes->find(42));
    CHECK(nodes->find(42)->name == "file");
    CHECK(nodes->size() == 0);  // not written yet
    nodes->flush();
    CHECK(nodes->size() == 2);
    CHECK(nodes->find(42)->parent == 7);
    CHECK(nodes->find(42)->handle.size() == 12);
    nodes->placed(42, {8, "moved", nodes->find(42)->handle});
    nodes->removed(43);
    CHECK(nodes->find(42)->name == "moved");
    CHECK_FALSE(nodes->find(43));
  }  // closing flushes
  auto nodes = ix::NodeTable::open(dir);
  CHECK(nodes->size() == 1);
  REQUIRE(nodes->find(42));
  CHECK(nodes->find(42)->parent == 8);
  CHECK(nodes->find(42)->name == "moved");
  CHECK_FALSE(nodes->find(43));
}

TEST_CASE("node table: readers never miss a place while flushes run", "[nodes]") {
  artifactfs::testing::TempDir tmp;
  auto nodes = ix::NodeTable::open(tmp.path() / "nodes");
  std::atomic<bool> stop{false};
  std::thread flusher([&] {
    while (!stop) nodes->flush();
  });
  bool all_found = true;
  for (ix::InodeNumber ino = 1; ino <= 5000; ++ino) {
    nodes->placed(ino, {1, "n" + std::to_string(ino), ""});
    for (ix::InodeNumber back : {ino, (ino + 1) / 2}) {
      auto place = nodes->find(back);
      if (!place || place->name != "n" + std::to_string(back)) all_found = false;
    }
  }
  stop = true;
  flusher.join();
  nodes->flush();
  CHECK(all_found);
  CHECK(nodes->size() == 5000);
}

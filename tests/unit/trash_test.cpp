// The trash on a real directory and index: the repair at start() of records
// that a crash left for entries already in the trash (evictions commit their
// index removals in batches), which must touch only records that describe
// those entries; deletion of more entries than the in-memory queue holds;
// and the hard-link rule (usage given back only if the index still counts
// the evicted artifact's name).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "fs/trash.hpp"
#include "fs/usage.hpp"
#include "index/index.hpp"
#include "tests/unit/temp_dir.hpp"

namespace ix = artifactfs::index;
namespace fs = artifactfs::fs;
using ix::Index;
using ix::Usage;

using artifactfs::testing::TempDir;

namespace {

// STORE/{data,trash,index} in a temporary directory.
struct Store {
  TempDir tmp;
  std::filesystem::path data = tmp.path() / "data";
  std::filesystem::path trash = tmp.path() / "trash";
  Store() {
    std::filesystem::create_directories(data / "ns");
    std::filesystem::create_directories(trash);
  }
  std::filesystem::path file(const std::string& rel, std::size_t size) const {
    std::ofstream(data / rel) << std::string(size, 'x');
    return data / rel;
  }
  struct stat lstat_of(const std::filesystem::path& p) const {
    struct stat st{};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st;
  }
  int trash_fd() const { return ::open(trash.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
  std::size_t trash_entries() const {
    return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(trash), {}));
  }
};

// An artifact "ns/<name>" of one file, recorded and counted in the totals.
ix::ArtifactId add(Store& s, Index& index, const std::string& name, std::size_t size) {
  auto st = s.lstat_of(s.file("ns/" + name, size));
  Usage u = fs::usage_of(st);
  ix::ArtifactId id = index.add_artifact("ns/" + name, 1, u, st.st_ino);
  index.charge_total(u);
  return id;
}

}  // namespace

TEST_CASE("trash: start() removes records of entries evicted just before a crash", "[trash]") {
  Store s;
  auto index = Index::open(s.tmp.path() / "index");
  ix::ArtifactId a = add(s, *index, "a", 5000);
  ix::ArtifactId b = add(s, *index, "b", 9000);
  ix::ArtifactId c = add(s, *index, "c", 100);
  ix::ArtifactId d = add(s, *index, "d", 100);
  index->flush();
  const Usage total = index->totals().usage;
  const Usage a_usage = index->get(a)->usage;

  // a: renamed into the trash, its removal never committed (the crash).
  std::filesystem::rename(s.data / "ns/a", s.trash / (std::to_string(a) + ".1.99"));
  // b's id on an entry that is another inode (an id of another index).
  std::ofstream(s.trash / (std::to_string(b) + ".2.99")) << "other";
  // c's id on an entry while c is still in the data tree under its name,
  // as a hard link of that very inode.
  REQUIRE(::link((s.data / "ns/c").c_str(), (s.trash / (std::to_string(c) + ".3.99")).c_str()) == 0);
  // Names that are no trash names.
  std::ofstream(s.trash / "junk") << "j";
  std::filesystem::create_directories(s.trash / "dir/sub");
  std::ofstream(s.trash / "dir/sub/f") << "f";

  {
    fs::Trash trash(s.trash_fd(), *index);
    trash.start();
    trash.drain();
    CHECK(s.trash_entries() == 0);
  }
  CHECK_FALSE(index->get(a));
  CHECK_FALSE(index->find("ns/a"));
  CHECK(index->get(b));
  CHECK(index->get(c));
  CHECK(index->get(d));
  Usage want = total;
  want += -a_usage;
  CHECK(index->totals().usage == want);
  CHECK(index->totals().artifact_count == 3);
  CHECK(index->stats().evictions == 1);
  CHECK(index->stats().bytes_evicted == static_cast<std::uint64_t>(a_usage.disk_bytes));
  // Committed: a reopened index agrees.
  index->close_clean();
  index.reset();
  index = Index::open(s.tmp.path() / "index");
  CHECK_FALSE(index->get(a));
  CHECK(index->totals().usage == want);
  CHECK(index->stats().evictions == 1);
}

TEST_CASE("trash: more entries than the queue holds are all deleted", "[trash]") {
  Store s;
  auto index = Index::open(s.tmp.path() / "index");
  const std::size_t n = fs::Trash::kQueueMax * 2 + 100;
  // Some left by an earlier run, the rest taken while running.
  for (std::size_t i = 0; i < 50; ++i) std::ofstream(s.trash / ("0." + std::to_string(i) + ".1")) << "x";
  fs::Trash trash(s.trash_fd(), *index);
  trash.start();
  int data_fd = ::open(s.data.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(data_fd >= 0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string name = "ns/t" + std::to_string(i);
    std::ofstream(s.data / name) << "y";
    REQUIRE(trash.take(data_fd, name, 0) == 0);
    CHECK(trash.pending() <= fs::Trash::kQueueMax + fs::Trash::kDeleters);
  }
  ::close(data_fd);
  trash.drain();
  CHECK(s.trash_entries() == 0);
  CHECK(trash.pending() == 0);
  CHECK(std::filesystem::is_empty(s.data / "ns"));
}

TEST_CASE("trash: usage of a surviving hard link is given back only if the index counts the evicted name",
          "[trash]") {
  Store s;
  auto index = Index::open(s.tmp.path() / "index");
  // One inode, two artifacts: ns/a and ns/b.
  auto st = s.lstat_of(s.file("ns/a", 6000));
  REQUIRE(::link((s.data / "ns/a").c_str(), (s.data / "ns/b").c_str()) == 0);
  st = s.lstat_of(s.data / "ns/a");
  const Usage u = fs::usage_of(st);
  ix::ArtifactId a = index->add_artifact("ns/a", 1, u, st.st_ino);
  ix::ArtifactId b = index->add_artifact("ns/b", 1, u, st.st_ino);
  index->charge_total(u);  // the inode once

  SECTION("the index counts a's name: its eviction took the usage off, the deleter gives it back") {
    index->set_links(st.st_ino, {{a, 1}, {b, 1}});
    REQUIRE(index->remove_artifact(a));
    index->charge_total(-u);  // as evict() does
    std::filesystem::rename(s.data / "ns/a", s.trash / (std::to_string(a) + ".1.1"));
    fs::Trash trash(s.trash_fd(), *index);
    trash.start();
    trash.drain();
    CHECK(index->totals().usage == u);  // b's name keeps it
    CHECK_FALSE(index->links(st.st_ino));
  }
  SECTION("after a walk of the tree the index does not count a's name: nothing is given back") {
    // What a reconcile leaves after a crash: a's record gone, totals and
    // links as the walk of the data tree found them (b alone).
    REQUIRE(index->remove_artifact(a));
    index->set_links(st.st_ino, {});
    std::filesystem::rename(s.data / "ns/a", s.trash / (std::to_string(a) + ".1.1"));
    fs::Trash trash(s.trash_fd(), *index);
    trash.start();
    trash.drain();
    CHECK(index->totals().usage == u);
  }
  CHECK(index->get(b));
  CHECK(s.trash_entries() == 0);
}

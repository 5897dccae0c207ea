// Partial recovery (fs/recover_changed.hpp) on real trees: a child process
// makes changes the way the file system does (mark, change the tree, charge
// some of it, flush some of it) and dies by SIGKILL; the recovery must then
// give the same index as a full walk of the same tree: per artifact, totals,
// outside usage, link records, outside tops; renamed artifacts keep their
// identity. Inodes linked across artifacts make it fall back.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "config/config.hpp"
#include "fs/reconcile.hpp"
#include "fs/recover_changed.hpp"
#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"
#include "index/index.hpp"

namespace fsx = artifactfs::fs;
namespace ix = artifactfs::index;
namespace fsys = std::filesystem;
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

void write(const fsys::path& file, std::size_t bytes, bool append = false) {
  std::ofstream out(file, append ? std::ios::app : std::ios::trunc);
  out << std::string(bytes, 'x');
}

Usage lstat_usage(const fsys::path& p) {
  struct stat st;
  REQUIRE(lstat(p.c_str(), &st) == 0);
  return fsx::usage_of(st);
}

// What an index says about a tree, by artifact name.
struct Picture {
  std::map<std::string, Usage> usage;
  std::map<std::string, ix::InodeNumber> roots;
  std::map<ix::InodeNumber, std::map<std::string, std::uint32_t>> links;  // "" = outside
  Usage total;
  Usage outside;
  std::uint64_t count = 0;
  std::vector<std::string> tops;
};

Picture picture(Index& index, int data_fd) {
  Picture p;
  std::map<ix::ArtifactId, std::string> names;
  index.for_each_with_prefix("", [&](const ix::ArtifactRecord& r) {
    p.usage[r.name] = r.usage;
    p.roots[r.name] = r.root_ino;
    names[r.id] = r.name;
  });
  fsx::walk_below(data_fd, [&](const fsx::WalkEntry& e) {
    if (!S_ISDIR(e.st.st_mode) && e.st.st_nlink > 1) {
      if (auto set = index.links(e.st.st_ino)) {
        auto& out = p.links[e.st.st_ino];
        out.clear();
        for (const auto& [id, n] : *set) out[id == ix::kOutside ? "" : names.at(id)] = n;
      }
    }
    return true;
  });
  p.total = index.totals().usage;
  p.outside = index.outside_usage();
  p.count = index.totals().artifact_count;
  p.tops = index.outside_tops();
  std::sort(p.tops.begin(), p.tops.end());
  return p;
}

// The index a full walk of the tree gives.
Picture full_walk(int data_fd, const artifactfs::config::Layout& layout) {
  TempDir reference;
  auto index = Index::open(reference.index_dir());
  fsx::reconcile(data_fd, layout, *index, "reference walk");
  return picture(*index, data_fd);
}

void same(const Picture& got, const Picture& want) {
  CHECK(got.usage == want.usage);
  CHECK(got.roots == want.roots);
  CHECK(got.links == want.links);
  CHECK(got.total == want.total);
  CHECK(got.outside == want.outside);
  CHECK(got.count == want.count);
  CHECK(got.tops == want.tops);
}

void in_killed_child(const std::function<void()>& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      body();
      kill(getpid(), SIGKILL);
    } catch (const std::exception& e) {
      fprintf(stderr, "child failed: %s\n", e.what());
    }
    _exit(3);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
}

struct Store {
  TempDir tmp;
  fsys::path data = tmp.path() / "data";
  fsys::path index_dir = tmp.path() / "index";
  int data_fd = -1;
  Store() {
    fsys::create_directory(data);
  }
  ~Store() {
    if (data_fd >= 0) close(data_fd);
  }
  void open_data() { data_fd = open(data.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
  // The first mount: a full walk, then a clean unmount.
  void first_mount(const artifactfs::config::Layout& layout) {
    open_data();
    auto index = Index::open(index_dir);
    fsx::reconcile(data_fd, layout, *index, "first mount");
    index->close_clean();
  }
};

}  // namespace

TEST_CASE("recover_changed: artifacts and kept entries changed before a kill -9", "[recover_changed]") {
  Store s;
  artifactfs::config::Layout layout;
  layout.depth = 1;
  layout.keep = {"stats", "tmp*"};
  for (int i = 0; i < 10; ++i) {
    auto a = s.data / ("a" + std::to_string(i));
    fsys::create_directories(a / "sub");
    write(a / "f", 1000 + i);
    write(a / "sub" / "g", 7000);
  }
  fsys::create_hard_link(s.data / "a7" / "f", s.data / "a7" / "f-again");  // linked within one artifact
  write(s.data / "stats", 10);
  fsys::create_directory(s.data / "tmp");
  write(s.data / "tmp" / "t", 5000);
  s.first_mount(layout);
  ix::ArtifactId a5 = *Index::open(s.index_dir)->find("a5");

  in_killed_child([&] {
    auto index = Index::open(s.index_dir);
    auto id = [&](const char* name) { return *index->find(name); };
    std::vector<Index::Change> open;
    // a1: a write charged and flushed, then more not yet charged.
    open.push_back(index->begin_change({Key::artifact(id("a1"))}));
    Usage before = lstat_usage(s.data / "a1" / "f");
    write(s.data / "a1" / "f", 300000, true);
    Usage delta = lstat_usage(s.data / "a1" / "f");
    delta += -before;
    index->charge_together({{id("a1"), delta}}, delta);
    index->flush();
    write(s.data / "a1" / "f", 200000, true);
    // a2: a new file, not charged.
    open.push_back(index->begin_change({Key::artifact(id("a2"))}));
    write(s.data / "a2" / "new", 12345);
    // a3: a deletion, charged and flushed with its change over: exact already.
    {
      auto change = index->begin_change({Key::artifact(id("a3"))});
      Usage gone = lstat_usage(s.data / "a3" / "f");
      fsys::remove(s.data / "a3" / "f");
      index->charge_together({{id("a3"), -gone}}, -gone);
    }
    index->flush();
    // n1: a new artifact whose record was never made.
    open.push_back(index->begin_change({Key::outside(), Key::path("n1")}));
    fsys::create_directory(s.data / "n1");
    write(s.data / "n1" / "x", 40000);
    // a4: removed, record removed, totals not yet committed (tombstone).
    open.push_back(index->begin_change({Key::outside(), Key::path("a4"), Key::artifact(id("a4"))}));
    fsys::remove_all(s.data / "a4");
    ix::ArtifactId a4 = id("a4");
    auto removed = index->remove_artifact(a4);
    index->charge_together({{a4, -removed->usage}}, -removed->usage);
    // a5: renamed to a5b, the index not told.
    open.push_back(index->begin_change({Key::outside(), Key::path("a5"), Key::path("a5b")}));
    fsys::rename(s.data / "a5", s.data / "a5b");
    // a6: a hard link within the artifact, its link record not written.
    open.push_back(index->begin_change({Key::artifact(id("a6"))}));
    fsys::create_hard_link(s.data / "a6" / "f", s.data / "a6" / "f2");
    // a7: one of its two linked names removed.
    open.push_back(index->begin_change({Key::artifact(id("a7"))}));
    fsys::remove(s.data / "a7" / "f-again");
    // Kept entries: stats grows, tmp gets a file, a new kept entry tmp2.
    open.push_back(index->begin_change({Key::outside(), Key::path("tmp2")}));
    write(s.data / "stats", 9000, true);
    write(s.data / "tmp" / "y", 3000);
    fsys::create_directory(s.data / "tmp2");
    write(s.data / "tmp2" / "z", 100);
    die();
  });

  auto index = Index::open(s.index_dir);
  REQUIRE_FALSE(index->previous_shutdown_clean());
  auto summary = fsx::recover_changed(s.data_fd, layout, *index);
  INFO(summary.why_not);
  REQUIRE(summary.done);
  CHECK(summary.artifacts == 6);  // a1 a2 n1 a5b a6 a7; a4 is gone; a0 a3 a8 a9 untouched
  same(picture(*index, s.data_fd), full_walk(s.data_fd, layout));
  CHECK(index->find("a5b") == a5);  // renamed, not removed and added
  CHECK_FALSE(index->find("a4"));
  CHECK(index->changed_set().artifacts.empty());
  CHECK(index->changed_set().paths.empty());
}

TEST_CASE("recover_changed: namespaces made, renamed and emptied before a kill -9", "[recover_changed]") {
  Store s;
  artifactfs::config::Layout layout;
  layout.depth = 2;
  layout.keep = {"stats"};
  for (const char* ns : {"ns0", "ns1", "ns3"}) {
    for (int k = 0; k < 3; ++k) {
      auto a = s.data / ns / ("k" + std::to_string(k));
      fsys::create_directories(a);
      write(a / "f", 2000 * (k + 1));
    }
    write(s.data / ns / "stats", 7);
  }
  write(s.data / "loose-file", 100);  // a non-artifact entry at namespace level
  s.first_mount(layout);
  ix::ArtifactId k1 = *Index::open(s.index_dir)->find("ns0/k1");

  in_killed_child([&] {
    auto index = Index::open(s.index_dir);
    std::vector<Index::Change> open;
    // A new namespace with an artifact in it (mkdir ns2, mkdir ns2/k0).
    open.push_back(index->begin_change({Key::outside(), Key::path("ns2"), Key::path("ns2/k0")}));
    fsys::create_directories(s.data / "ns2" / "k0");
    write(s.data / "ns2" / "k0" / "f", 100000);
    // ns0 renamed to ns9, the index renames one record of three.
    open.push_back(index->begin_change({Key::outside(), Key::path("ns0"), Key::path("ns9")}));
    fsys::rename(s.data / "ns0", s.data / "ns9");
    index->rename_artifact(*index->find("ns0/k0"), "ns9/k0");
    // ns1/k1 removed, its record not.
    open.push_back(index->begin_change({Key::outside(), Key::path("ns1/k1"), Key::artifact(*index->find("ns1/k1"))}));
    fsys::remove_all(s.data / "ns1" / "k1");
    // ns3 emptied and removed (rm -r ns3): records not removed.
    open.push_back(index->begin_change({Key::outside(), Key::path("ns3")}));
    fsys::remove_all(s.data / "ns3");
    die();
  });

  auto index = Index::open(s.index_dir);
  auto summary = fsx::recover_changed(s.data_fd, layout, *index);
  INFO(summary.why_not);
  REQUIRE(summary.done);
  CHECK(summary.namespaces == 4);  // ns2, ns0, ns9, ns3
  same(picture(*index, s.data_fd), full_walk(s.data_fd, layout));
  CHECK(index->find("ns9/k1") == k1);
}

TEST_CASE("recover_changed: an inode linked across artifacts makes it walk everything", "[recover_changed]") {
  Store s;
  artifactfs::config::Layout layout;
  layout.depth = 1;
  for (const char* a : {"a", "b", "c"}) {
    fsys::create_directory(s.data / a);
    write(s.data / a / "f", 5000);
  }
  fsys::create_hard_link(s.data / "a" / "f", s.data / "b" / "shared");
  s.first_mount(layout);

  SECTION("a dirty artifact holds a name of it") {
    in_killed_child([&] {
      auto index = Index::open(s.index_dir);
      auto change = index->begin_change({Key::artifact(*index->find("a"))});
      write(s.data / "a" / "f", 100000, true);  // b's usage changes too
      die();
    });
  }
  SECTION("a dirty artifact lost its name of it") {
    in_killed_child([&] {
      auto index = Index::open(s.index_dir);
      auto change = index->begin_change({Key::artifact(*index->find("b"))});
      fsys::remove(s.data / "b" / "shared");
      die();
    });
  }
  SECTION("a new link into another artifact") {
    in_killed_child([&] {
      auto index = Index::open(s.index_dir);
      auto change = index->begin_change({Key::artifact(*index->find("c"))});
      fsys::create_hard_link(s.data / "c" / "f", s.data / "a" / "from-c");
      die();
    });
  }
  auto index = Index::open(s.index_dir);
  auto summary = fsx::recover_changed(s.data_fd, layout, *index);
  CHECK_FALSE(summary.done);
  CHECK_FALSE(summary.why_not.empty());
  // Nothing was committed: the full walk the mount then makes is exact.
  CHECK(index->changed_set().usable);
  fsx::reconcile(s.data_fd, layout, *index, "fallback");
  same(picture(*index, s.data_fd), full_walk(s.data_fd, layout));
  CHECK_FALSE(Index::open(s.index_dir) == nullptr);
}

TEST_CASE("recover_changed: nothing changed since the last flush walks nothing", "[recover_changed]") {
  Store s;
  artifactfs::config::Layout layout;
  layout.depth = 1;
  for (int i = 0; i < 5; ++i) {
    fsys::create_directory(s.data / ("a" + std::to_string(i)));
    write(s.data / ("a" + std::to_string(i)) / "f", 100);
  }
  s.first_mount(layout);
  in_killed_child([&] {
    auto index = Index::open(s.index_dir);
    {
      auto change = index->begin_change({Key::artifact(*index->find("a1"))});
      write(s.data / "a1" / "f", 100);  // same size: no charge
    }
    index->flush();
    die();
  });
  auto index = Index::open(s.index_dir);
  auto summary = fsx::recover_changed(s.data_fd, layout, *index);
  REQUIRE(summary.done);
  CHECK(summary.artifacts == 0);
  CHECK(summary.outside_tops == 0);
  same(picture(*index, s.data_fd), full_walk(s.data_fd, layout));
}

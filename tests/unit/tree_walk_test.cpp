// The tree walker and its users (walk_subtree, the trash deleter, reconcile)
// on real directories in a temporary directory: a chain 30,000 levels deep
// walked with a bounded number of descriptors, symlinks never followed,
// entries swapped during the walk never walked into, and a walk that stops
// when the tree moves under it.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "config/config.hpp"
#include "fs/reconcile.hpp"
#include "fs/trash.hpp"
#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"
#include "index/index.hpp"

namespace fsx = artifactfs::fs;
namespace ix = artifactfs::index;
using artifactfs::testing::TempDir;

namespace {

// Deeper than PATH_MAX allows as a path, and than the descriptor limit
// (20,000 here) allows as one descriptor per level.
constexpr int kDeep = 30000;

void check(bool ok, const char* what) {
  if (!ok) throw std::system_error(errno, std::generic_category(), what);
}

// A descriptor closed at the end of the scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) { check(fd >= 0, "open"); }
  ~Fd() { ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  operator int() const { return fd_; }

 private:
  int fd_;
};

int open_dir(const std::filesystem::path& path) { return ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }

struct stat lstat_at(int dirfd, const char* name) {
  struct stat st;
  check(::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0, "fstatat");
  return st;
}

void make_file(int dirfd, const char* name, const std::string& content) {
  int fd = ::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  check(fd >= 0, "create");
  check(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()), "write");
  ::close(fd);
}

// Makes `levels` nested directories, `name` in `dirfd` and then "d" in each,
// with a 5000-byte file "f" in the deepest: one level at a time, as its path
// would be longer than PATH_MAX. Returns the usage of all of it.
ix::Usage make_chain(int dirfd, const std::string& name, int levels) {
  ix::Usage usage;
  check(::mkdirat(dirfd, name.c_str(), 0755) == 0, "mkdirat");
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  check(fd >= 0, "openat");
  for (int level = 1; level < levels; ++level) {
    check(::mkdirat(fd, "d", 0755) == 0, "mkdirat");
    int child = ::openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(child >= 0, "openat");
    usage += fsx::usage_of(lstat_at(fd, "."));
    ::close(fd);
    fd = child;
  }
  make_file(fd, "f", std::string(5000, 'x'));
  usage += fsx::usage_of(lstat_at(fd, "f"));
  usage += fsx::usage_of(lstat_at(fd, "."));
  ::close(fd);
  return usage;
}

int open_descriptors() {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// rel -> st_mode of every entry walk_subtree reports.
std::map<std::string, mode_t> modes(int dirfd, const std::string& name) {
  std::map<std::string, mode_t> out;
  for (const auto& entry : fsx::walk_subtree(dirfd, name)) out[entry.rel] = entry.st.st_mode;
  return out;
}

}  // namespace

// One chain for all the deep cases: making 30,000 directories is the slow
// part (a third of a millisecond each on a small VM's ext4).
TEST_CASE("tree walk: a 30,000-level chain is walked, reconciled and deleted", "[tree_walk][reconcile][trash]") {
  TempDir tmp;
  for (const char* dir : {"data/b", "data/tmp/x", "trash", "outside"}) {
    std::filesystem::create_directories(tmp.path() / dir);
  }
  tmp.write("data/b/file", "hello");
  tmp.write("data/stats", "kept");
  tmp.write("data/tmp/x/f", "kept too");
  tmp.write("outside/secret", "keep me");
  Fd data(open_dir(tmp.path() / "data"));
  const ix::Usage chain_usage = make_chain(data, "a", kDeep);

  {
    INFO("walk_tree holds a bounded number of descriptors");
    const int baseline = open_descriptors();
    int visited = 0, left = 0, deepest = 0, most = baseline;
    bool names_ok = true;
    auto sample = [&] { most = std::max(most, open_descriptors()); };
    bool complete = fsx::walk_tree(
        data, "a",
        [&](const fsx::WalkEntry& e) {
          if (++visited % 1000 == 0) sample();
          deepest = std::max(deepest, e.depth);
          names_ok = names_ok && e.rel.size() == (e.depth == 0 ? 0u : 2u * e.depth - 1);
          return true;
        },
        [&](const fsx::WalkEntry& e) {
          if (++left % 1000 == 0) sample();
          // Left with its parent open: the name resolves to the directory.
          struct stat st;
          names_ok = names_ok && ::fstatat(e.parent_fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                     st.st_ino == e.st.st_ino;
        });
    CHECK(complete);
    CHECK(visited == kDeep + 1);
    CHECK(deepest == kDeep);
    CHECK(left == kDeep);
    CHECK(names_ok);
    CHECK(most - baseline <= 100);
    CHECK(open_descriptors() == baseline);
  }
  {
    INFO("walk_subtree works under a 128-descriptor limit (in a child process)");
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      rlimit limit{128, 128};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(2);
      auto entries = fsx::walk_subtree(data, "a");
      bool ok = entries.size() == kDeep + 1 && entries.front().rel.empty() && S_ISREG(entries.back().st.st_mode) &&
                entries.back().rel.size() == 2u * fsx::kMaxRelComponents - 1;  // rel is cut (linear memory)
      ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }

  auto index = ix::Index::open(tmp.index_dir());
  {
    INFO("reconcile counts the chain as one artifact");
    artifactfs::config::Layout layout;
    layout.depth = 1;
    layout.keep = {"stats", "tmp"};
    auto summary = fsx::reconcile(data, layout, *index, "unit test");
    CHECK(summary.artifacts == 2);
    CHECK(summary.entries == 1 + (kDeep + 1) + 2 + 1 + 3);  // root, a, b, stats, tmp
    CHECK(index->totals().artifact_count == 2);
    CHECK(index->totals().usage.files == 4);
    CHECK(index->outside_usage().files == 2);
    auto b = index->find("b");
    REQUIRE(b);
    CHECK(index->get(*b)->usage.files == 1);
  }
  auto a = index->find("a");
  REQUIRE(a);
  CHECK(index->get(*a)->usage == chain_usage);

  {
    INFO("the trash deletes it, but nothing outside it");
    // A symlink to a directory outside, and a file with a second name outside the artifact.
    Fd top(::openat(data, "a", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    check(::symlinkat((tmp.path() / "outside").c_str(), top, "escape") == 0, "symlinkat");
    make_file(top, "shared", "shared");
    check(::linkat(top, "shared", data, "other-name", 0) == 0, "linkat");
    const struct stat shared = lstat_at(data, "other-name");
    index->set_links(shared.st_ino, {{*a, 1}, {ix::kOutside, 1}});
    ix::Usage expected = index->totals().usage;
    expected += fsx::usage_of(shared);  // survives: given back to the totals
    {
      fsx::Trash trash(open_dir(tmp.path() / "trash"), *index);
      trash.start();
      REQUIRE(trash.take(data, "a", *a) == 0);
      trash.drain();
      CHECK(trash.pending() == 0);
    }
    CHECK(std::filesystem::is_empty(tmp.path() / "trash"));
    CHECK(std::filesystem::exists(tmp.path() / "outside" / "secret"));
    CHECK(std::filesystem::exists(tmp.path() / "data" / "other-name"));
    CHECK_FALSE(std::filesystem::exists(tmp.path() / "data" / "a"));
    CHECK_FALSE(index->links(shared.st_ino));
    CHECK(index->totals().usage == expected);
  }
}

TEST_CASE("tree walk: symlinks are reported and never followed", "[tree_walk]") {
  TempDir tmp;
  std::filesystem::create_directories(tmp.path() / "outside" / "sub");
  tmp.write("outside/secret", "x");
  std::filesystem::create_directories(tmp.path() / "top" / "dir");
  tmp.write("top/dir/file", "x");
  std::filesystem::create_directory_symlink(tmp.path() / "outside", tmp.path() / "top" / "link");
  std::filesystem::create_directory_symlink("../../outside", tmp.path() / "top" / "dir" / "up");
  std::filesystem::create_directory_symlink("top", tmp.path() / "toplink");
  Fd root(open_dir(tmp.path()));

  auto seen = modes(root, "top");
  CHECK(seen.size() == 5);
  for (const char* rel : {"", "dir", "dir/file", "dir/up", "link"}) CHECK(seen.count(rel) == 1);
  CHECK(S_ISLNK(seen["link"]));
  CHECK(S_ISLNK(seen["dir/up"]));

  // At the top: reported, not followed, even if the visitor asks for it.
  auto top = fsx::walk_subtree(root, "toplink");
  REQUIRE(top.size() == 1);
  CHECK(top[0].rel.empty());
  CHECK(S_ISLNK(top[0].st.st_mode));
  int visits = 0;
  CHECK(fsx::walk_tree(root, "toplink", [&](const fsx::WalkEntry&) { return ++visits > 0; }));
  CHECK(visits == 1);
}

TEST_CASE("tree walk: the visitor decides, and a replaced entry is not walked into", "[tree_walk]") {
  TempDir tmp;
  std::filesystem::create_directories(tmp.path() / "top" / "dir");
  tmp.write("top/dir/file", "x");
  std::filesystem::create_directory(tmp.path() / "outside");
  tmp.write("outside/secret", "x");
  Fd root(open_dir(tmp.path()));
  std::vector<std::string> visited, left;
  auto walk = [&](auto on_dir) {
    return fsx::walk_tree(
        root, "top",
        [&](const fsx::WalkEntry& e) {
          visited.push_back(e.rel);
          return e.rel == "dir" ? on_dir(e) : true;
        },
        [&](const fsx::WalkEntry& e) { left.push_back(e.rel); });
  };

  SECTION("told not to descend") {
    CHECK(walk([](const fsx::WalkEntry&) { return false; }));
  }
  SECTION("replaced by a symlink to a directory outside") {
    CHECK(walk([&](const fsx::WalkEntry& e) {
      check(::renameat(e.parent_fd, "dir", e.parent_fd, "dir.old") == 0, "renameat");
      check(::symlinkat((tmp.path() / "outside").c_str(), e.parent_fd, "dir") == 0, "symlinkat");
      return true;
    }));
  }
  SECTION("replaced by another directory") {
    CHECK(walk([&](const fsx::WalkEntry& e) {
      check(::renameat(e.parent_fd, "dir", e.parent_fd, "dir.old") == 0, "renameat");
      check(::mkdirat(e.parent_fd, "dir", 0755) == 0, "mkdirat");
      Fd planted(::openat(e.parent_fd, "dir", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      make_file(planted, "planted", "x");
      return true;
    }));
  }
  CHECK(visited == std::vector<std::string>{"", "dir"});
  CHECK(left == std::vector<std::string>{""});
}

TEST_CASE("tree walk: stops without acting when a directory is moved during the walk", "[tree_walk]") {
  TempDir tmp;
  Fd root(open_dir(tmp.path()));
  make_chain(root, "top", 200);
  bool moved = false;
  std::vector<int> left;
  bool complete = fsx::walk_tree(
      root, "top",
      [&](const fsx::WalkEntry& e) {
        if (e.depth == 150 && !moved) {
          // Deeper than the open levels: "top" and "top/d" have been closed.
          check(::renameat(root, "top/d", root, "moved") == 0, "renameat");
          moved = true;
        }
        return true;
      },
      [&](const fsx::WalkEntry& e) { left.push_back(e.depth); });
  CHECK(moved);
  CHECK_FALSE(complete);
  // Levels below the moved directory are left through their real parents;
  // the moved one's parent is no longer "top", so it is not acted on.
  REQUIRE(!left.empty());
  CHECK(left.size() == 198);
  CHECK(left.back() == 2);
}

TEST_CASE("reconcile: kept names at namespace depths keep everything below them outside", "[tree_walk][reconcile]") {
  TempDir tmp;
  for (const char* dir : {"data/ns/a", "data/ns/cache.lock/sub", "data/tmp/x/y", "data/ns2"}) {
    std::filesystem::create_directories(tmp.path() / dir);
  }
  tmp.write("data/ns/a/f", "1");
  tmp.write("data/ns/cache.lock/sub/f", "2");
  tmp.write("data/tmp/x/y/f", "3");
  tmp.write("data/ns2/b", "4");
  Fd data(open_dir(tmp.path() / "data"));

  artifactfs::config::Layout layout;
  layout.depth = 2;
  layout.keep = {"*.lock", "tmp"};
  auto index = ix::Index::open(tmp.index_dir());
  auto summary = fsx::reconcile(data, layout, *index, "unit test");

  CHECK(summary.artifacts == 2);
  CHECK(index->find("ns/a"));
  CHECK(index->find("ns2/b"));
  CHECK_FALSE(index->find("tmp/x"));
  CHECK_FALSE(index->find("ns/cache.lock"));
  CHECK(index->totals().usage.files == 4);
  CHECK(index->outside_usage().files == 2);
}

// Artifacts of several entries (layout.group-suffixes): the key rule, and
// staging an eviction of all members on a real directory, including the
// roll-forward at mount of a staging a kill -9 interrupted.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "fs/artifact_groups.hpp"
#include "fs/group_eviction.hpp"
#include "tests/unit/temp_dir.hpp"

namespace fs = artifactfs::fs;
namespace fsys = std::filesystem;
using artifactfs::testing::TempDir;

namespace {

artifactfs::config::Layout sstate_layout() {
  artifactfs::config::Layout layout;
  layout.depth = 3;
  layout.group_suffixes = {".siginfo", ".sig"};
  layout.keep = {"*.lock"};
  return layout;
}

struct Dirs {
  TempDir tmp;
  fsys::path data = tmp.path() / "data";
  fsys::path staging = tmp.path() / "evicting";
  fsys::path trash = tmp.path() / "trash";
  Dirs() {
    fsys::create_directories(data / "ab/cd");
    fsys::create_directories(staging);
    fsys::create_directories(trash);
  }
  void file(const fsys::path& p) { std::ofstream(p) << p.filename().string(); }
  int open_dir(const fsys::path& p) { return ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }
  std::size_t entries(const fsys::path& p) {
    return static_cast<std::size_t>(std::distance(fsys::directory_iterator(p), fsys::directory_iterator{}));
  }
};

}  // namespace

TEST_CASE("a name's group key drops its longest suffix", "[groups]") {
  auto layout = sstate_layout();
  CHECK(fs::group_key(layout, "X.tar.zst") == "X.tar.zst");
  CHECK(fs::group_key(layout, "X.tar.zst.siginfo") == "X.tar.zst");
  CHECK(fs::group_key(layout, "X.tar.zst.sig") == "X.tar.zst");
  CHECK(fs::group_key(layout, ".sig") == ".sig");  // nothing would be left
  CHECK(fs::group_key(layout, "X.sig.sig") == "X.sig");
  CHECK(fs::group_key_path(layout, "ab/cd/X.siginfo") == "ab/cd/X");
  CHECK(fs::group_member_names(layout, "X") == std::vector<std::string>{"X", "X.siginfo", "X.sig"});
  // "X.sig" has the key "X", so it is no member of the group "X.sig"
  CHECK(fs::group_member_names(layout, "X.sig") == std::vector<std::string>{"X.sig.siginfo", "X.sig.sig"});
  layout.group_suffixes = {".tar.zst", "-meta.json"};  // Turborepo: the key itself is no entry
  CHECK(fs::group_key(layout, "h1.tar.zst") == "h1");
  CHECK(fs::group_key(layout, "h1-meta.json") == "h1");
  layout.group_suffixes = {".lock"};
  CHECK(fs::group_member_names(layout, "X") == std::vector<std::string>{"X"});  // kept names never are members
}

TEST_CASE("staging a group moves all its members, or none", "[groups]") {
  Dirs d;
  auto layout = sstate_layout();
  for (const char* n : {"X", "X.sig", "X.siginfo", "Y"}) d.file(d.data / "ab/cd" / n);
  int parent = d.open_dir(d.data / "ab/cd");
  int staging = d.open_dir(d.staging);
  auto members = fs::existing_group_members(parent, layout, "X");
  REQUIRE(members == std::vector<std::string>{"X", "X.siginfo", "X.sig"});

  SECTION("all of them") {
    std::string staged;
    REQUIRE(fs::stage_group(staging, parent, "ab/cd", members, 7, staged) == 0);
    CHECK(staged.rfind("7.", 0) == 0);
    CHECK(fs::existing_group_members(parent, layout, "X").empty());
    CHECK(fsys::exists(d.data / "ab/cd/Y"));
    CHECK(d.entries(d.staging / staged) == 4);  // the members and their list
  }
  SECTION("none when one cannot be moved") {
    members.push_back("X.missing");
    std::string staged;
    CHECK(fs::stage_group(staging, parent, "ab/cd", members, 7, staged) == ENOENT);
    CHECK(fs::existing_group_members(parent, layout, "X").size() == 3);
    CHECK(d.entries(d.staging) == 0);
  }
  close(staging);
  close(parent);
}

TEST_CASE("the next mount finishes a staged eviction a kill interrupted", "[groups]") {
  Dirs d;
  for (const char* n : {"X", "X.sig", "X.siginfo", "Y"}) d.file(d.data / "ab/cd" / n);
  // What a kill -9 after the first rename leaves: the list, one member moved.
  const std::string name = "9.1.4242.group";
  fsys::create_directory(d.staging / name);
  {
    std::ofstream list(d.staging / name / ".members", std::ios::binary);
    static const char text[] = "ab/cd\0X\0X.siginfo\0X.sig\0";  // and the terminating NUL ends the list
    list << std::string(text, sizeof text);
  }
  fsys::rename(d.data / "ab/cd/X", d.staging / name / "X");
  // And a staging killed before its list was complete: nothing moved yet.
  fsys::create_directory(d.staging / "10.2.4242.group");
  { std::ofstream(d.staging / "10.2.4242.group/.members", std::ios::binary) << std::string("ab/cd\0Y", 7); }

  int staging = d.open_dir(d.staging);
  int data = d.open_dir(d.data);
  int trash = d.open_dir(d.trash);
  CHECK(fs::finish_group_evictions(staging, data, trash) == 1);
  close(trash);
  close(data);
  close(staging);
  CHECK(d.entries(d.staging) == 0);
  CHECK(d.entries(d.data / "ab/cd") == 1);  // Y only
  CHECK(fsys::exists(d.data / "ab/cd/Y"));
  for (const char* n : {"X", "X.sig", "X.siginfo"}) CHECK(fsys::exists(d.trash / name / n));
}

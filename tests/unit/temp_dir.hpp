// A private directory for one test, removed with everything in it.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "fs/tree_walk.hpp"

namespace artifactfs::testing {

// Removes the entry `name` of `dirfd` and everything below it, depth-first.
// False if something could not be removed.
inline bool remove_tree(int dirfd, const std::string& name) {
  bool ok = true;
  bool complete = artifactfs::fs::walk_tree(
      dirfd, name,
      [&](const artifactfs::fs::WalkEntry& e) {
        if (S_ISDIR(e.st.st_mode)) return true;
        ok = ::unlinkat(e.parent_fd, e.name.c_str(), 0) == 0 && ok;
        return false;
      },
      [&](const artifactfs::fs::WalkEntry& e) {
        ok = ::unlinkat(e.parent_fd, e.name.c_str(), AT_REMOVEDIR) == 0 && ok;
      });
  return complete && ok;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "artifactfs-unit-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  // With the tree walker, not std::filesystem::remove_all: a test may leave
  // a tree deeper than PATH_MAX or than the descriptor limit.
  ~TempDir() {
    int parent = ::open(path_.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0) return;
    remove_tree(parent, path_.filename());
    ::close(parent);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path index_dir() const { return path_ / "index"; }
  // Writes `content` to the file `name` in the directory; returns its path.
  std::filesystem::path write(const std::string& name, const std::string& content) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream(file) << content;
    return file;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace artifactfs::testing

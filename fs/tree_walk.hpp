// Iterating a backing directory with lstat of each entry, shared by the
// subtree walks of renames and by the reconcile walk.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace artifactfs::fs {

inline int open_subdir(int dirfd, const std::string& name) {
  return openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

// Calls fn(fd, name, lstat) for every entry of the directory open as `fd`
// (but "." and ".."), then closes `fd`. A negative fd is ignored.
template <typename Fn>
void for_each_child(int fd, Fn&& fn) {
  if (fd < 0) return;
  DIR* dir = fdopendir(fd);
  if (!dir) {
    close(fd);
    return;
  }
  while (dirent* de = readdir(dir)) {
    std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    fn(fd, name, st);
  }
  closedir(dir);
}

}  // namespace artifactfs::fs

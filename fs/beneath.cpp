// See beneath.hpp.
#include "fs/beneath.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

namespace artifactfs::fs {

namespace {

// Component by component: every intermediate is a directory opened with
// O_NOFOLLOW, so a symlink anywhere fails with ELOOP (or ENOTDIR).
int open_by_components(int root_fd, std::string_view path, int flags) {
  int dir = openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -1;
  while (!path.empty()) {
    auto slash = path.find('/');
    std::string component(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (component.empty() || component == "." || component == "..") {
      close(dir);
      errno = EXDEV;
      return -1;
    }
    int next_flags = path.empty() ? flags : O_PATH | O_DIRECTORY;
    int next = openat(dir, component.c_str(), next_flags | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(dir);
    if (next < 0) {
      errno = err;
      return -1;
    }
    dir = next;
  }
  return dir;
}

}  // namespace

int open_beneath(int root_fd, std::string_view path, int flags) {
  if (path.empty()) return openat(root_fd, ".", flags | O_CLOEXEC);
  static std::atomic<bool> have_openat2{true};
  if (have_openat2) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    std::string p(path);
    long fd = syscall(SYS_openat2, root_fd, p.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
    have_openat2 = false;  // an old kernel: the same every time
  }
  return open_by_components(root_fd, path, flags);
}

std::pair<std::string, std::string> split_parent(std::string_view path) {
  auto slash = path.rfind('/');
  if (slash == std::string_view::npos) return {"", std::string(path)};
  return {std::string(path.substr(0, slash)), std::string(path.substr(slash + 1))};
}

}  // namespace artifactfs::fs

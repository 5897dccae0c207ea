// See tree_walk.hpp: single-threaded per walk, never follows a symlink,
// bounded descriptors.
#include "fs/tree_walk.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace artifactfs::fs {

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

bool same_inode(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

// Opens the directory `name` of `parent_fd` only if it is still the inode
// `expected` (its lstat) describes: O_NOFOLLOW refuses a symlink, the fstat
// an entry swapped in since. -1 with errno (ESTALE for a swapped entry).
int open_checked(int parent_fd, const std::string& name, const struct stat& expected) {
  int fd = openat(parent_fd, name.c_str(), kDirFlags);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !same_inode(st, expected)) {
    close(fd);
    errno = ESTALE;
    return -1;
  }
  return fd;
}

// Paths in deep trees are long; a log line shows their end.
std::string shown(const std::string& rel) {
  if (rel.empty()) return "the top of the walk";
  return rel.size() <= 200 ? rel : "..." + rel.substr(rel.size() - 200);
}

const char* open_error(int err) {
  // ELOOP: a symlink, ENOTDIR: a non-directory, ESTALE: another directory.
  return err == ESTALE || err == ELOOP || err == ENOTDIR ? "it was replaced after it was listed" : std::strerror(err);
}

// Every name in the directory open as `fd` but "." and "..". Lists through a
// duplicate (closed before returning) so that `fd` stays a plain descriptor
// for the *at calls; the shared offset is never used again.
bool read_names(int fd, std::vector<std::string>& names) {
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return false;
  DIR* dir = fdopendir(dup_fd);
  if (!dir) {
    close(dup_fd);
    return false;
  }
  int err = 0;
  for (;;) {
    errno = 0;
    dirent* de = readdir(dir);
    if (!de) {
      err = errno;
      break;
    }
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
  }
  closedir(dir);
  errno = err;
  return err == 0;
}

class Walk {
 public:
  // `top_parent` holds level 0 if level 0 is an entry of the walk
  // (walk_tree, `leave_top`); walk_below's directory is not left.
  Walk(int top_parent, bool leave_top, const WalkVisit& visit, const WalkLeave& leave)
      : top_parent_(top_parent), leave_top_(leave_top), visit_(visit), leave_(leave) {}
  ~Walk() {
    for (const Frame& frame : stack_) {
      if (frame.fd >= 0) close(frame.fd);
    }
  }
  Walk(const Walk&) = delete;
  Walk& operator=(const Walk&) = delete;

  // Walks into the directory open as `fd` (owned from here on).
  void push(int fd, const struct stat& st, const std::string& name) {
    Frame frame{fd, st, name, {}, 0, rel_.size()};
    if (!read_names(fd, frame.names)) {
      const int err = errno;
      spdlog::warn("tree walk: cannot list {}: {}", shown(rel_), std::strerror(err));
    }
    stack_.push_back(std::move(frame));
    if (stack_.size() > kOpenLevels) {
      Frame& far = stack_[stack_.size() - 1 - kOpenLevels];
      if (far.fd >= 0) {
        close(far.fd);
        far.fd = -1;
      }
    }
  }

  bool run() {
    while (!stack_.empty()) {
      Frame& frame = stack_.back();
      if (frame.next == frame.names.size()) {
        if (!pop()) return false;
        continue;
      }
      const std::string name = std::move(frame.names[frame.next++]);
      const int fd = frame.fd;
      const int depth = static_cast<int>(stack_.size());
      rel_.resize(frame.rel_size);
      if (!rel_.empty()) rel_ += '/';
      rel_ += name;
      struct stat st;
      if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        const int err = errno;  // ENOENT: removed since it was listed
        if (err != ENOENT) spdlog::warn("tree walk: cannot lstat {}: {}", shown(rel_), std::strerror(err));
        continue;
      }
      if (!visit_({fd, name, rel_, depth, st}) || !S_ISDIR(st.st_mode)) continue;
      if (st.st_dev != stack_.front().st.st_dev) {
        // Another filesystem mounted inside the store is not the store's:
        // never account for it, and never let the trash delete its contents.
        spdlog::warn("tree walk: not walking into {}: a mount point", shown(rel_));
        continue;
      }
      int child = open_checked(fd, name, st);
      if (child < 0) {
        const int err = errno;
        if (err != ENOENT) spdlog::warn("tree walk: not walking into {}: {}", shown(rel_), open_error(err));
        continue;
      }
      push(child, st, name);  // invalidates `frame`
    }
    return true;
  }

 private:
  struct Frame {
    int fd;                          // -1 while closed: kOpenLevels or more levels above the deepest
    struct stat st;                  // the directory, as it was when walked into
    std::string name;                // its name in its parent
    std::vector<std::string> names;  // its listing, read when walked into
    std::size_t next;                // the next name to visit
    std::size_t rel_size;            // its own path is rel_.substr(0, rel_size)
  };

  // Leaves the deepest directory: makes sure its parent is open, closes it,
  // then calls leave. False if its parent is not the directory it was.
  bool pop() {
    const std::size_t level = stack_.size() - 1;
    Frame& frame = stack_.back();  // always open: the open levels are the deepest ones
    if (level > 0 && stack_[level - 1].fd < 0) {
      Frame& parent = stack_[level - 1];
      int fd = openat(frame.fd, "..", kDirFlags);
      struct stat st;
      if (fd >= 0 && (fstat(fd, &st) != 0 || !same_inode(st, parent.st))) {
        close(fd);
        fd = -1;
        errno = ESTALE;
      }
      if (fd < 0) {
        const int err = errno;
        rel_.resize(frame.rel_size);
        spdlog::warn("tree walk: stopped: the parent of {} is no longer the directory it was walked from ({}); "
                     "the tree changed under the walk",
                     shown(rel_), err == ESTALE ? "moved" : std::strerror(err));
        return false;
      }
      parent.fd = fd;
    }
    close(frame.fd);
    const struct stat st = frame.st;
    const std::string name = std::move(frame.name);
    rel_.resize(frame.rel_size);
    stack_.pop_back();
    if (leave_ && (level > 0 || leave_top_)) {
      leave_({level == 0 ? top_parent_ : stack_.back().fd, name, rel_, static_cast<int>(level), st});
    }
    return true;
  }

  const int top_parent_;
  const bool leave_top_;
  const WalkVisit& visit_;
  const WalkLeave& leave_;
  std::vector<Frame> stack_;
  std::string rel_;  // path of the entry being visited, or of the deepest directory
};

bool is_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

}  // namespace

bool walk_tree(int dirfd, const std::string& name, const WalkVisit& visit, const WalkLeave& leave) {
  if (!is_name(name)) {
    spdlog::warn("tree walk: refusing to walk \"{}\": not a name", name);
    return false;
  }
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    if (err != ENOENT) spdlog::warn("tree walk: cannot lstat {}: {}", name, std::strerror(err));
    return true;
  }
  const std::string top_rel;
  if (!visit({dirfd, name, top_rel, 0, st}) || !S_ISDIR(st.st_mode)) return true;
  int fd = open_checked(dirfd, name, st);
  if (fd < 0) {
    const int err = errno;
    if (err != ENOENT) spdlog::warn("tree walk: not walking into {}: {}", name, open_error(err));
    return true;
  }
  Walk walk(dirfd, true, visit, leave);
  walk.push(fd, st, name);
  return walk.run();
}

bool walk_below(int dirfd, const WalkVisit& visit, const WalkLeave& leave) {
  // An open file description of its own: listing through a duplicate of
  // `dirfd` would move the caller's offset.
  int fd = openat(dirfd, ".", kDirFlags);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    const int err = errno;
    if (fd >= 0) close(fd);
    spdlog::warn("tree walk: cannot open the directory to walk: {}", std::strerror(err));
    return false;
  }
  Walk walk(-1, false, visit, leave);
  walk.push(fd, st, "");
  return walk.run();
}

std::vector<SubtreeEntry> walk_subtree(int dirfd, const std::string& name) {
  std::vector<SubtreeEntry> entries;
  walk_tree(dirfd, name, [&](const WalkEntry& e) {
    // Owners are decided by the first layout-depth components of a path
    // (at most kMaxRelComponents); keeping only those keeps the memory of a
    // deep subtree linear in its size, not quadratic in its depth.
    std::size_t cut = 0;
    int components = 0;
    while (cut < e.rel.size() && components < kMaxRelComponents) {
      std::size_t slash = e.rel.find('/', cut);
      ++components;
      cut = slash == std::string::npos ? e.rel.size() : slash + 1;
    }
    if (cut < e.rel.size()) --cut;  // drop the slash before the rest
    entries.push_back({e.rel.substr(0, cut), e.st});
    return true;
  });
  return entries;
}

}  // namespace artifactfs::fs

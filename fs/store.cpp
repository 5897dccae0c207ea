#include "fs/store.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace artifactfs::fs {

namespace fsys = std::filesystem;

namespace {

std::string layout_text(const config::Layout& layout) {
  std::ostringstream out;
  out << "depth " << layout.depth << "\n";
  for (const auto& glob : layout.keep) out << "keep " << glob << "\n";
  // Written only when set, so that stores made before groups existed keep
  // their layout (no walk at the first mount of a newer artifactfs).
  for (const auto& suffix : layout.group_suffixes) out << "group-suffix " << suffix << "\n";
  return out.str();
}

// Creates `dir` mode 0700 if it is missing (its parents as usual).
void make_dir(const fsys::path& dir) {
  std::error_code ec;
  if (dir.has_parent_path()) fsys::create_directories(dir.parent_path(), ec);
  if (!ec && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) ec.assign(errno, std::generic_category());
  if (ec) {
    throw UserError("cannot create " + dir.string() + ": " + ec.message() +
                    " (choose a store on a writable local filesystem, or fix its permissions)");
  }
  if (!fsys::is_directory(dir)) {
    throw UserError(dir.string() + " exists and is not a directory (move it away or choose another store)");
  }
}

// The store is the daemon's alone: users reach the cache only through the
// mount, where every operation is checked with the caller's rights. A store
// others can enter would let them plant symlinks or hard links the daemon
// might act on as root, or read files the mount would deny them.
void check_private(const fsys::path& root) {
  struct stat st;
  if (lstat(root.c_str(), &st) != 0) {
    throw UserError("cannot use store " + root.string() + ": " + std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) {
    throw UserError("store " + root.string() + " is a symlink (name the real directory: " +
                    fsys::canonical(root).string() + ")");
  }
  if (st.st_uid != geteuid()) {
    throw UserError("store " + root.string() + " is owned by uid " + std::to_string(st.st_uid) +
                    ", not by the daemon's user (uid " + std::to_string(geteuid()) +
                    "); the store must be private to the daemon: `chown -R " + std::to_string(geteuid()) + " " +
                    root.string() + " && chmod 700 " + root.string() + "`");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    throw UserError("store " + root.string() + " is open to other users (mode " + mode +
                    "); users must reach the cache only through the mount, never the store: `chmod 700 " +
                    root.string() + "` (to share the cache, chmod the mountpoint instead, e.g. `chmod 1777 MOUNTPOINT` "
                    "once mounted)");
  }
}

}  // namespace

Store::Store(fsys::path root) : root_(std::move(root)) {
  std::error_code ec;
  if (fsys::exists(root_, ec) && !fsys::is_directory(root_, ec)) {
    throw UserError("store " + root_.string() + " exists and is not a directory (choose a directory)");
  }
  make_dir(root_);
  check_private(root_);
  make_dir(data_dir());
  make_dir(index_dir());
  make_dir(trash_dir());
  make_dir(evicting_dir());
  if (access(root_.c_str(), W_OK) != 0) {
    throw UserError("store " + root_.string() + " is not writable: " + std::strerror(errno));
  }
  fsys::path lock_path = root_ / "lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) throw UserError("cannot open " + lock_path.string() + ": " + std::strerror(errno));
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::ifstream in(lock_path);
    std::string pid, mountpoint;
    in >> pid;
    std::getline(in >> std::ws, mountpoint);
    close(lock_fd_);
    lock_fd_ = -1;
    throw UserError("store " + root_.string() + " is already in use by artifactfs pid " +
                    (pid.empty() ? "?" : pid) + " mounted at " + (mountpoint.empty() ? "?" : mountpoint) +
                    " (one daemon per store: unmount it first with `fusermount3 -u " +
                    (mountpoint.empty() ? "MOUNTPOINT" : mountpoint) + "`)");
  }
}

Store::~Store() {
  if (lock_fd_ >= 0) {
    if (ftruncate(lock_fd_, 0) != 0) { /* the lock, not the text, is what counts */ }
    close(lock_fd_);
  }
}

void Store::record_owner(const fsys::path& mountpoint) {
  std::string text = std::to_string(getpid()) + " " + mountpoint.string() + "\n";
  if (ftruncate(lock_fd_, 0) != 0 || pwrite(lock_fd_, text.data(), text.size(), 0) < 0) {
    spdlog::warn("could not record the owner in {}: {}", (root_ / "lock").string(), std::strerror(errno));
  }
}

bool Store::layout_changed(const config::Layout& layout) const {
  std::ifstream in(root_ / "layout");
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  return text.str() != layout_text(layout);
}

void Store::record_layout(const config::Layout& layout) {
  fsys::path tmp = root_ / "layout.tmp";
  const std::string text = layout_text(layout);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  bool written = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ::close(fd);
  if (!written) throw UserError("cannot write " + tmp.string() + ": " + std::strerror(errno));
  fsys::rename(tmp, root_ / "layout");
}

fsys::path Store::set_index_aside() {
  auto stamp = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  fsys::path aside = root_ / ("index.broken-" + std::to_string(stamp.count()));
  fsys::rename(index_dir(), aside);
  make_dir(index_dir());
  return aside;
}

std::optional<config::Layout> recorded_layout(const fsys::path& store) {
  std::ifstream in(store / "layout");
  if (!in) return std::nullopt;
  config::Layout layout;
  layout.keep.clear();
  for (std::string word; in >> word;) {
    if (word == "depth") {
      in >> layout.depth;
    } else if (word == "keep") {
      std::string glob;
      std::getline(in >> std::ws, glob);
      layout.keep.push_back(glob);
    } else if (word == "group-suffix") {
      std::string suffix;
      std::getline(in >> std::ws, suffix);
      layout.group_suffixes.push_back(suffix);
    } else {
      return std::nullopt;
    }
  }
  return layout;
}

void prepare_mountpoint(const fsys::path& mountpoint, const fsys::path& store) {
  struct stat st;
  // statfs is never answered from the kernel's caches, so unlike stat it
  // sees a dead FUSE mount even when the root's attributes are cached.
  struct statvfs sv;
  bool dead = statvfs(mountpoint.c_str(), &sv) != 0 && errno == ENOTCONN;
  if (dead || stat(mountpoint.c_str(), &st) != 0) {
    if (dead || errno == ENOTCONN) {
      // A daemon died and left its mount behind: detach it and go on.
      spdlog::warn("{} is a dead mount (Transport endpoint is not connected); unmounting it", mountpoint.string());
      pid_t pid = fork();
      if (pid == 0) {
        execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint.c_str(), static_cast<char*>(nullptr));
        _exit(127);
      }
      int status = 0;
      if (pid > 0) waitpid(pid, &status, 0);
      if (stat(mountpoint.c_str(), &st) != 0) {
        throw UserError("mountpoint " + mountpoint.string() + " is a dead FUSE mount that could not be cleared: " +
                        std::strerror(errno) + " (run `fusermount3 -u -z " + mountpoint.string() +
                        "` or, as root, `umount -l " + mountpoint.string() + "`, then mount again)");
      }
    } else if (errno == ENOENT) {
      throw UserError("mountpoint " + mountpoint.string() + " does not exist (create it with `mkdir -p " +
                      mountpoint.string() + "`)");
    } else {
      throw UserError("cannot use mountpoint " + mountpoint.string() + ": " + std::strerror(errno));
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    throw UserError("mountpoint " + mountpoint.string() + " is not a directory (mount on an empty directory)");
  }
  auto canonical_store = fsys::weakly_canonical(store);
  auto canonical_mount = fsys::weakly_canonical(mountpoint);
  auto inside = [](const fsys::path& inner, const fsys::path& outer) {
    auto rel = inner.lexically_relative(outer);
    return !rel.empty() && *rel.begin() != "..";
  };
  if (inside(canonical_mount, canonical_store) || inside(canonical_store, canonical_mount)) {
    throw UserError("mountpoint " + mountpoint.string() + " and store " + store.string() +
                    " overlap (keep the store outside the mountpoint and vice versa)");
  }
}

}  // namespace artifactfs::fs

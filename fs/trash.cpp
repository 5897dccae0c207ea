// See trash.hpp for the concurrency model.
#include "fs/usage.hpp"
#include "fs/trash.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

namespace artifactfs::fs {

namespace {

// Trash entries are named "<artifact id>.<sequence>" so the deleter knows
// whose hard links it is removing.
index::ArtifactId id_of_entry(const std::string& name) {
  return std::strtoull(name.c_str(), nullptr, 10);
}

}  // namespace

Trash::Trash(int trash_fd, index::Index& index) : trash_fd_(trash_fd), index_(index) {}

Trash::~Trash() {
  stop();
  close(trash_fd_);
}

void Trash::start() {
  // Leftovers of an earlier run: their records are already gone.
  if (int fd = openat(trash_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    if (DIR* dir = fdopendir(fd)) {
      std::lock_guard lock(mutex_);
      while (dirent* de = readdir(dir)) {
        std::string name = de->d_name;
        if (name == "." || name == "..") continue;
        queue_.push_back(name);
      }
      closedir(dir);
    } else {
      close(fd);
    }
  }
  worker_ = std::thread([this] { run(); });
}

void Trash::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
}

int Trash::take(int data_fd, const std::string& path, index::ArtifactId id) {
  std::string name;
  {
    std::lock_guard lock(mutex_);
    name = std::to_string(id) + "." + std::to_string(++sequence_) + "." + std::to_string(getpid());
  }
  if (renameat(data_fd, path.c_str(), trash_fd_, name.c_str()) != 0) return errno;
  std::lock_guard lock(mutex_);
  queue_.push_back(name);
  wake_.notify_one();
  return 0;
}

void Trash::drain() {
  std::unique_lock lock(mutex_);
  wake_.notify_one();
  idle_.wait(lock, [&] { return (queue_.empty() && !busy_) || stopping_; });
}

std::uint64_t Trash::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + (busy_ ? 1 : 0);
}

void Trash::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;  // what is left is deleted at the next mount
    std::string name = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    remove_entry(name);
    lock.lock();
    busy_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
}

// Deletes one trash entry depth-first. An inode that still has names in
// other artifacts survives: its usage, taken off the totals at eviction, is
// given back and its link record updated.
void Trash::remove_entry(const std::string& name) {
  const index::ArtifactId id = id_of_entry(name);
  std::set<ino_t> survivors;
  auto forget_links = [&](const struct stat& st) {
    if (S_ISDIR(st.st_mode) || st.st_nlink <= 1) return;
    auto links = index_.links(st.st_ino);
    if (!links) return;
    links->erase(id);
    std::uint64_t remaining = 0;
    for (const auto& [owner, count] : *links) remaining += count;
    index_.set_links(st.st_ino, remaining > 1 ? *links : index::LinkSet{});
    if (remaining > 0 && survivors.insert(st.st_ino).second) index_.charge_total(usage_of(st));
  };

  struct Frame {
    int fd;
    DIR* dir;
  };
  struct stat top;
  if (fstatat(trash_fd_, name.c_str(), &top, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (!S_ISDIR(top.st_mode)) {
    forget_links(top);
    unlinkat(trash_fd_, name.c_str(), 0);
    return;
  }
  std::vector<std::pair<int, std::string>> path;  // (parent fd, name) of open directories
  std::vector<Frame> stack;
  int fd = openat(trash_fd_, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  stack.push_back({fd, fdopendir(fd)});
  path.emplace_back(trash_fd_, name);
  while (!stack.empty()) {
    Frame& frame = stack.back();
    dirent* de = frame.dir ? readdir(frame.dir) : nullptr;
    if (!de) {
      if (frame.dir) closedir(frame.dir);
      else close(frame.fd);
      stack.pop_back();
      auto [parent_fd, dir_name] = path.back();
      path.pop_back();
      if (unlinkat(parent_fd, dir_name.c_str(), AT_REMOVEDIR) != 0) {
        spdlog::warn("could not delete evicted directory {}: {}", dir_name, std::strerror(errno));
      }
      continue;
    }
    std::string child = de->d_name;
    if (child == "." || child == "..") continue;
    struct stat st;
    if (fstatat(frame.fd, child.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      int cfd = openat(frame.fd, child.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cfd < 0) continue;
      int parent_fd = frame.fd;
      stack.push_back({cfd, fdopendir(cfd)});
      path.emplace_back(parent_fd, child);
      continue;
    }
    forget_links(st);
    unlinkat(frame.fd, child.c_str(), 0);
  }
}

}  // namespace artifactfs::fs

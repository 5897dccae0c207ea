// See trash.hpp for the concurrency model.
#include "fs/tree_walk.hpp"
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

// Deletes one trash entry depth-first: files as they are visited, each
// directory once its children are gone. An inode that still has names in
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
  bool complete = walk_tree(
      trash_fd_, name,
      [&](const WalkEntry& e) {
        if (S_ISDIR(e.st.st_mode)) return true;
        forget_links(e.st);
        unlinkat(e.parent_fd, e.name.c_str(), 0);
        return false;
      },
      [&](const WalkEntry& e) {
        if (unlinkat(e.parent_fd, e.name.c_str(), AT_REMOVEDIR) != 0) {
          spdlog::warn("could not delete evicted directory {}: {}", e.name, std::strerror(errno));
        }
      });
  // What is left is deleted again at the next mount.
  if (!complete) spdlog::warn("stopped deleting evicted entry {}", name);
}

}  // namespace artifactfs::fs

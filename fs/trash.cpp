// See trash.hpp for the naming of entries, the memory bound and the
// concurrency model.
#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"
#include "fs/trash.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "fs/beneath.hpp"

namespace artifactfs::fs {

namespace {

// Trash entries are named "<artifact id>.<sequence>.<pid>" so the deleter
// knows whose hard links it is removing. 0 for a name of another form.
index::ArtifactId id_of_entry(const std::string& name) {
  return std::strtoull(name.c_str(), nullptr, 10);
}

// Index writes of the repair at start(), per transaction.
constexpr std::size_t kRepairBatch = 1000;

}  // namespace

Trash::Trash(int trash_fd, index::Index& index) : trash_fd_(trash_fd), index_(index) {}

Trash::~Trash() {
  stop();
  if (listing_) closedir(listing_);
  close(trash_fd_);
}

void Trash::start() {
  try {
    repair_index();
  } catch (const std::exception& e) {
    spdlog::error("trash: could not check the index against the entries left in the trash ({}); the index will be "
                  "rebuilt from the data tree at the next mount",
                  e.what());
    index_.mark_inconsistent();
  }
  {
    std::lock_guard lock(mutex_);
    if (int fd = openat(trash_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
      listing_ = fdopendir(fd);
      if (!listing_) close(fd);
    }
    if (!listing_) spdlog::warn("trash: cannot list the trash directory: {}", std::strerror(errno));
    // Leftovers of an earlier run are found by listing.
    rescan_ = true;
    stopping_ = false;
  }
  for (unsigned i = 0; i < kDeleters; ++i) {
    workers_.emplace_back([this] { run(); });
    pthread_setname_np(workers_.back().native_handle(), "afs-trash");
  }
}

// An eviction renames the artifact into the trash, then queues the removal
// of its record, which the eviction walk commits with its batch. A daemon
// killed in between leaves an entry whose record is still in the index, and
// the committed totals still count it. Such a record is removed here as the
// eviction would have done it: the record goes, its usage leaves the totals,
// the eviction is counted; then the entry is deleted like any other. The
// record must describe the entry (same inode; its name no longer in the data
// tree), so an id of another index (after --rebuild-index) is never taken
// for it. After a full walk of the data tree (reconcile), or a recovery from
// the changed set (the eviction walk marks every page of candidates before
// renaming any), such records are gone already and this finds nothing: it
// covers a recovery that did not know of the eviction.
void Trash::repair_index() {
  int fd = openat(trash_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = fd >= 0 ? fdopendir(fd) : nullptr;
  if (!dir) {
    if (fd >= 0) close(fd);
    return;
  }
  int data_fd = openat(trash_fd_, "../data", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  std::uint64_t repaired = 0;
  std::uint64_t bytes = 0;
  try {
    while (dirent* de = readdir(dir)) {
      const std::string name = de->d_name;
      const index::ArtifactId id = id_of_entry(name);
      if (id == index::kOutside) continue;
      auto record = index_.get(id);
      if (!record) continue;
      struct stat st;
      if (fstatat(trash_fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (record->root_ino != 0 && record->root_ino != st.st_ino) continue;
      if (data_fd >= 0) {
        const auto [parent_path, leaf] = split_parent(record->name);
        int parent_fd = open_beneath(data_fd, parent_path, O_PATH | O_DIRECTORY);
        if (parent_fd >= 0) {
          struct stat there;
          bool present = fstatat(parent_fd, leaf.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 &&
                         (record->root_ino == 0 || there.st_ino == record->root_ino);
          close(parent_fd);
          if (present) continue;
        }
      }
      auto removed = index_.remove_artifact_queued(id);
      if (!removed) continue;
      // Paired with the removed id (its tombstone, see CHANGED SET in index.hpp).
      index_.charge_together({{id, -removed->usage}}, -removed->usage);
      const auto freed = static_cast<std::uint64_t>(std::max<std::int64_t>(0, removed->usage.disk_bytes));
      index_.count(index::Stat::evictions);
      index_.count(index::Stat::bytes_evicted, freed);
      bytes += freed;
      if (++repaired % kRepairBatch == 0) index_.commit_removals();
    }
  } catch (...) {
    closedir(dir);
    if (data_fd >= 0) close(data_fd);
    throw;
  }
  closedir(dir);
  if (data_fd >= 0) close(data_fd);
  if (repaired > 0) {
    index_.commit_removals();
    index_.flush();
    spdlog::warn("trash: removed the index records of {} artifact(s) ({} bytes on disk) evicted just before the "
                 "daemon stopped without committing them",
                 repaired, bytes);
  }
}

void Trash::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  idle_.notify_all();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

int Trash::take(int data_fd, const std::string& path, index::ArtifactId id) {
  std::string name;
  {
    std::lock_guard lock(mutex_);
    name = std::to_string(id) + "." + std::to_string(++sequence_) + "." + std::to_string(getpid());
  }
  if (renameat(data_fd, path.c_str(), trash_fd_, name.c_str()) != 0) return errno;
  {
    std::lock_guard lock(mutex_);
    // A full queue spills to the directory: memory stays bounded however far
    // the deleters are behind.
    if (queue_.size() < kQueueMax) {
      queue_.push_back(std::move(name));
    } else {
      rescan_ = true;
    }
  }
  wake_.notify_one();
  return 0;
}

void Trash::drain() {
  std::unique_lock lock(mutex_);
  wake_.notify_all();
  idle_.wait(lock, [&] {
    return stopping_ || (queue_.empty() && !rescan_ && !scanning_ && deleting_.empty());
  });
}

std::uint64_t Trash::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + deleting_.size();
}

bool Trash::next_name_locked(std::string& name) {
  for (;;) {
    if (!queue_.empty()) {
      name = std::move(queue_.front());
      queue_.pop_front();
    } else if (scanning_ || rescan_) {
      if (!listing_) {
        rescan_ = false;
        return false;
      }
      if (!scanning_) {
        // Entries renamed in during the pass may or may not be listed by it;
        // their take() sets rescan_ again, which asks for another pass.
        rewinddir(listing_);
        scanning_ = true;
        rescan_ = false;
      }
      dirent* de = readdir(listing_);
      if (!de) {
        scanning_ = false;
        continue;
      }
      name = de->d_name;
      if (name == "." || name == "..") continue;
    } else {
      return false;
    }
    // Listed again while the other deleter works on it: its business. (A
    // name deleted already is gone; one listed after its deletion failed is
    // simply tried again.)
    if (deleting_.count(name) == 0) return true;
  }
}

void Trash::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stopping_) return;  // what is left is deleted at the next mount
    std::string name;
    if (!next_name_locked(name)) {
      if (deleting_.empty()) idle_.notify_all();
      wake_.wait(lock);
      continue;
    }
    deleting_.insert(name);
    lock.unlock();
    remove_entry(name);
    lock.lock();
    deleting_.erase(name);
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
    // Two deleters may hold names of one inode (two evicted artifacts that
    // share it): one read-modify-write of its link record at a time, or both
    // would give its usage back.
    std::lock_guard links_lock(links_mutex_);
    auto links = index_.links(st.st_ino);
    // Only if the index still counts this name in the evicted artifact was
    // its usage taken off the totals by this eviction. After a crash and a
    // walk of the data tree, the totals and the link table are the walk's,
    // which never saw the trash: giving the usage back would count the
    // inode twice.
    if (!links || links->count(id) == 0) return;
    // Changed set (index.hpp): the totals get usage back for an inode whose
    // other name is in the trash, where no recovery walk looks; a crash
    // before that is committed must walk the whole tree.
    index::Index::Change change;
    try {
      change = index_.begin_change({index::Index::ChangeKey::links()});
    } catch (const std::exception&) {
      index_.mark_inconsistent();
    }
    links->erase(id);
    std::uint64_t remaining = 0;
    for (const auto& [owner, count] : *links) remaining += count;
    index_.set_links(st.st_ino, remaining > 1 ? *links : index::LinkSet{});
    if (remaining > 0 && survivors.insert(st.st_ino).second) index_.charge_total(usage_of(st));
  };
  // An inode's place goes from the node table while it still exists: once
  // it is deleted, its number may be reused by a new file, whose place must
  // not be removed instead.
  auto forget_place = [&](const WalkEntry& e) {
    if (!nodes_) return;
    struct stat now = e.st;
    // A file's other name may have gone since the listing (a hard link
    // inside the same artifact): its last name is the one to forget it.
    if (!S_ISDIR(now.st_mode) && now.st_nlink > 1 &&
        fstatat(e.parent_fd, e.name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0) {
      return;
    }
    if (S_ISDIR(now.st_mode) || now.st_nlink <= 1) nodes_->removed(now.st_ino);
  };
  bool complete = walk_tree(
      trash_fd_, name,
      [&](const WalkEntry& e) {
        if (S_ISDIR(e.st.st_mode)) return true;
        forget_links(e.st);
        forget_place(e);
        unlinkat(e.parent_fd, e.name.c_str(), 0);
        return false;
      },
      [&](const WalkEntry& e) {
        forget_place(e);
        if (unlinkat(e.parent_fd, e.name.c_str(), AT_REMOVEDIR) != 0) {
          spdlog::warn("could not delete evicted directory {}: {}", e.name, std::strerror(errno));
        }
      });
  // What is left is deleted again at the next mount.
  if (!complete) spdlog::warn("stopped deleting evicted entry {}", name);
}

}  // namespace artifactfs::fs

// Evicted artifacts wait in STORE/trash until their data is deleted, so that
// an eviction is one rename (instant, atomic, crash-safe) and the slow part
// runs in the background. Whatever a crash left in the trash is deleted at
// the next mount.
//
// CONCURRENCY MODEL
// take() runs on the evicting thread (quota thread or an ENOSPC writer) and
// only renames. One deleter thread empties the trash. `mutex_` guards the
// queue and the "busy" flag; drain() waits on `idle_` until the queue is
// empty and the deleter idle. No lock is held while deleting.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "index/index.hpp"

namespace artifactfs::fs {

class Trash {
 public:
  // trash_fd: the STORE/trash directory (on the same filesystem as data).
  Trash(int trash_fd, index::Index& index);
  ~Trash();
  Trash(const Trash&) = delete;
  Trash& operator=(const Trash&) = delete;

  // Moves `path` (relative to data_fd) into the trash in one rename.
  // Returns 0 or an errno.
  int take(int data_fd, const std::string& path, index::ArtifactId id);
  // Blocks until everything in the trash is deleted (ENOSPC path).
  void drain();
  // Starts the deleter; it first queues what an earlier run left behind.
  void start();
  void stop();
  std::uint64_t pending() const;

 private:
  void run();
  void remove_entry(const std::string& name);

  int trash_fd_;
  index::Index& index_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::string> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  std::uint64_t sequence_ = 0;
  std::thread worker_;
};

}  // namespace artifactfs::fs

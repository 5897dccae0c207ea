// Sends kernel cache invalidations from a thread of its own.
//
// CONCURRENCY MODEL
// Any thread may queue(); one worker thread sends. A notification must never
// be sent from a FUSE request handler: the kernel may hold the directory
// lock the invalidation needs while it waits for that handler's reply (an
// ENOSPC eviction started by a create in the same directory would
// deadlock). `mutex_` guards the queue and the set of queued inode
// invalidations; it is not held while sending.
//
// COALESCING
// An inode invalidation that is already queued and not yet sent is not
// queued again: it is sent after every change made before it was taken off
// the queue, which covers the new change too. An eviction run of a
// thousand artifacts in one namespace directory then sends that directory's
// invalidation a few times, not a thousand, and the queue holds at most one
// inode invalidation per node plus the entry invalidations in flight.
#pragma once

#include <fuse_lowlevel.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

namespace artifactfs::fs {

class Notifier {
 public:
  Notifier();
  ~Notifier();  // drains the queue, then stops
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Until a session is set, notifications are dropped (nothing is cached yet)
  // and no thread runs.
  void set_session(fuse_session* session);
  void entry_gone(std::uint64_t parent_node, const std::string& name);
  void attributes_changed(std::uint64_t node);
  // Attributes and cached contents (a directory's cached listing).
  void contents_changed(std::uint64_t node);
  void stop();  // before the session is destroyed

 private:
  struct Item {
    std::uint64_t node;
    std::string name;       // empty: the inode `node` itself; else the entry `name` in `node`
    bool contents = false;  // with an empty name: drop cached contents too
  };
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  // Nodes with an inode invalidation in queue_: (node, contents) packed as
  // node * 2 + contents.
  std::unordered_set<std::uint64_t> queued_inodes_;
  void queue_inode_locked(std::uint64_t node, bool contents);
  fuse_session* session_ = nullptr;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace artifactfs::fs

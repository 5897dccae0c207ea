// Evicted artifacts wait in STORE/trash until their data is deleted, so that
// an eviction is one rename (instant, atomic, crash-safe) and the slow part
// runs in the background. Whatever a crash left in the trash is deleted at
// the next mount.
//
// An entry is named "<artifact id>.<sequence>.<pid>": the deleter knows whose
// hard links it is removing, and the next mount knows whose record to remove
// if the daemon died between the rename and the commit of the record's
// removal (evictions commit their index removals in batches; see
// quota/eviction_walk.hpp) and the mount's recovery did not drop it (the
// candidates are marked in the changed set, so normally it does). start()
// does that repair before deleting.
//
// MEMORY
// Bounded whatever the number of evictions: at most kQueueMax names are kept
// in memory. Names taken while the queue is full, and entries an earlier run
// left, are found by listing the trash directory (the directory is the
// queue; a listing pass resumes where it stopped, and runs only while the
// in-memory queue is empty).
//
// CONCURRENCY MODEL
// take() runs on the evicting thread (quota thread or an ENOSPC writer) and
// only renames and queues a name. kDeleters deleter threads empty the trash:
// deleting a file waits for the disk (on ext4 without a journal and with
// `discard`, a synchronous discard per file; otherwise the journal), and
// two threads overlap those waits, which one thread, like `rm -rf`, cannot.
// `mutex_` guards the queue, the listing stream and the set of names being
// deleted; a name is deleted by one thread at a time (a name listed again
// while a thread deletes it is passed over). drain() waits on `idle_` until
// nothing is queued, no listing is due and no deleter is busy. No lock is
// held while deleting; the index is called without `mutex_` held.
// `links_mutex_` (a leaf, taken without `mutex_`) serialises the deleters'
// read-modify-write of link records: two evicted artifacts sharing an inode
// may be deleted at the same time.
#pragma once

#include <dirent.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "index/index.hpp"
#include "index/node_table.hpp"

namespace artifactfs::fs {

class Trash {
 public:
  // trash_fd: the STORE/trash directory (on the same filesystem as data,
  // which is its sibling STORE/data).
  Trash(int trash_fd, index::Index& index);
  ~Trash();
  Trash(const Trash&) = delete;
  Trash& operator=(const Trash&) = delete;

  // Moves `path` (relative to data_fd) into the trash in one rename.
  // Returns 0 or an errno.
  int take(int data_fd, const std::string& path, index::ArtifactId id);
  // Blocks until everything in the trash is deleted (ENOSPC path).
  void drain();
  // Repairs the index for entries an earlier run left (see above), then
  // starts the deleters, which delete those entries first. Call before
  // requests are served.
  void start();
  void stop();
  // The table of node places (index/node_table.hpp): the places of the
  // inodes deleted here are removed from it, so that it holds only inodes
  // that still exist. Set before start(); may be null.
  void set_node_table(index::NodeTable* nodes) { nodes_ = nodes; }
  // Entries known to wait (queued or being deleted); entries found only by
  // listing the directory are not counted.
  std::uint64_t pending() const;

  static constexpr std::size_t kQueueMax = 8192;
  static constexpr unsigned kDeleters = 2;

 private:
  void run();
  // The next name to delete (caller holds mutex_); false if there is none.
  bool next_name_locked(std::string& name);
  void remove_entry(const std::string& name);
  void repair_index();

  int trash_fd_;
  index::Index& index_;
  index::NodeTable* nodes_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::string> queue_;  // at most kQueueMax
  // Entries exist that are not queued: list the directory (again).
  bool rescan_ = false;
  DIR* listing_ = nullptr;  // the directory stream of the trash
  bool scanning_ = false;   // a listing pass is under way (listing_ is positioned in it)
  std::set<std::string> deleting_;  // names being deleted, at most kDeleters
  // Serialises the deleters' updates of link records (a leaf lock, taken
  // without mutex_).
  std::mutex links_mutex_;
  bool stopping_ = false;
  std::uint64_t sequence_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace artifactfs::fs

// Uses through handles held open for long: a read or readdir through a
// handle opened more than a flush interval ago is a use of its artifact, as
// an open is. Long-lived openers (an NFS server keeps the files its clients
// read open between their reads; daemons keep theirs open) would otherwise
// be seen once, at their open.
//
// Such reads reach the daemon only if the kernel's page cache does not hold
// the data (every open keeps the cache: it stays valid because every change
// comes through this mount). So once per flush interval the flush thread
// asks for the cached pages (and attributes) of every inode held open for
// longer than a flush interval without a use seen since to be dropped, once
// per inode until the daemon serves a read of it again: the next read comes
// to the daemon, which records it. The cost, only for long-held handles: one
// invalidation per idle inode, and per inode read through such a handle at
// most one invalidation, one GETATTR and a re-read from the backing file's
// page cache per flush interval. Handles opened and closed within a flush
// interval, the common case, cost one list insertion and removal.
//
// CONCURRENCY MODEL
// `mutex_` guards the intrusive list (the `prev`/`next` fields of every
// HandleUse in it); it is a leaf lock, held for a few pointer writes or one
// pass over the list, never across a call out. A HandleUse's times and its
// inode's pages_dropped flag are atomics, read and written without it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "fs/inode.hpp"

namespace artifactfs::fs {

class LongHeldHandles;

// Per open handle inside an artifact (part of Handle and DirHandle). Taken
// off its list when destroyed.
struct HandleUse {
  HandleUse() = default;
  HandleUse(const HandleUse&) = delete;
  HandleUse& operator=(const HandleUse&) = delete;
  ~HandleUse();

  InodePtr inode;
  // When a use through this handle was last recorded (its open, or a read
  // or readdir more than a flush interval after the previous one).
  std::atomic<std::int64_t> last_use_ns{0};
  LongHeldHandles* list = nullptr;  // the list it is in, if any (set and cleared by its owner)
  HandleUse* prev = nullptr;  // guarded by LongHeldHandles::mutex_
  HandleUse* next = nullptr;
};

class LongHeldHandles {
 public:
  // Lists `use` for `inode`, its last use now.
  void add(HandleUse& use, InodePtr inode, std::int64_t now_ns);
  void remove(HandleUse& use);
  // Inodes open through a handle with no use recorded for `idle_ns` whose
  // pages were not dropped since the daemon last served a read of them;
  // marks them dropped (Inode::pages_dropped). Each inode once.
  std::vector<InodePtr> take_idle(std::int64_t now_ns, std::int64_t idle_ns);

 private:
  std::mutex mutex_;
  HandleUse* head_ = nullptr;
};

}  // namespace artifactfs::fs

// Lets the subtree walk of a rename run before namespace_mutex_ is taken,
// and then tells, under the mutex, whether the walk is still true.
//
// A rename that moves entries between artifacts must know every entry of
// the moved subtree, with its link count, to move usage and records. Walking
// a large subtree under namespace_mutex_ would stop every create, unlink and
// rename of the whole mount for as long as the walk takes. Instead the
// rename walks first, without the mutex, while this watch records what
// namespace changes touch; under the mutex it asks whether any of them
// touched a walked entry. If none did, the walk is exactly what a walk under
// the mutex would have found; otherwise the rename walks again under it.
//
// What a namespace change records (Filesystem calls record() under the
// mutex, for each change made through the mount):
// - the directories whose names it changed (parent and new parent), and
// - the inodes whose link counts it changed (link, unlink, a replaced
//   rename target), which the walk's lstat would now get wrong.
// Every change inside a walked subtree has its directory inside it: either
// a directory the walk saw, or one made or moved there after the walk saw
// its parent, which that making or moving recorded. Writes need no record:
// the usage moved is what the index last charged (indexed_usage), read under
// the mutex.
//
// CONCURRENCY: every member is called with Filesystem::namespace_mutex_
// held, which is the only lock this needs; several watches may be open at
// once (one per rename in flight). Cost when no watch is open: one test of
// an empty map per change.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_set>
#include <vector>

#include "fs/tree_walk.hpp"

namespace artifactfs::fs {

class NamespaceWatch {
 public:
  using Ticket = std::uint64_t;
  // A watch recording more inodes than this gives up (its walk is redone
  // under the mutex): memory stays bounded under a storm of changes.
  static constexpr std::size_t kMaxRecorded = 65536;

  // Starts recording for a walk about to begin.
  Ticket open();
  // Records a directory whose names changed or an inode whose link count did.
  void record(ino_t ino);
  // Ends the watch: true if nothing recorded since open() is an entry of
  // `walked` (and the watch did not give up).
  bool close(Ticket ticket, const std::vector<SubtreeEntry>& walked);
  // Ends a watch whose walk is not used.
  void abandon(Ticket ticket);

 private:
  struct Log {
    std::unordered_set<ino_t> inodes;
    bool overflowed = false;
  };
  Ticket next_ = 1;
  std::map<Ticket, Log> open_;
};

}  // namespace artifactfs::fs

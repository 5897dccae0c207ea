// Inodes the kernel knows (or knew), and the table that maps FUSE node ids to
// them.
//
// CONCURRENCY MODEL
// FUSE worker threads, the flush thread and the quota thread all use the
// table. `InodeTable::mutex_` guards the map and every Inode's naming fields
// (nlookup, parent, name, depth, artifact, role). `Inode::mutex` guards the
// backing fd and the accounted usage. Lock order: InodeTable::mutex_ before
// Inode::mutex; neither is held across a fuse_reply_* call or an index
// write. Callers hold Inode objects by shared_ptr, so a concurrent forget
// never frees an inode under an operation.
//
// A node id is the backing inode number when that is free (so ids, like
// st_ino, are stable across remounts), else one from a private range: when
// an evicted file's backing inode number is reused by a new file while the
// kernel still knows the old node id, the new file gets a new id, so the
// kernel never mistakes one for the other (or serves one's cached pages for
// the other). A forgotten inode is kept "dormant" (fd closed, last known
// parent and name kept) so that a node id handed out earlier can be
// resolved again when an NFS server asks for it after the kernel dropped it
// (LOOKUP of "."). At most kMaxDormant such inodes are kept; an NFS handle
// older than that answers ESTALE, as after a restart.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fs/live_artifact.hpp"
#include "index/index.hpp"

namespace artifactfs::fs {

// What an entry is in the cache layout.
enum class Role {
  root,       // the mount root
  namespace_, // a directory above the artifact depth
  kept,       // matches layout.keep (or lies below such an entry): never an artifact
  artifact,   // the root of an artifact
  member,     // inside an artifact
};

struct Inode {
  Inode(std::uint64_t node, ino_t backing_ino, mode_t type) : node(node), ino(backing_ino), type(type) {}
  const std::uint64_t node;  // FUSE node id
  const ino_t ino;           // backing inode number
  const mode_t type;  // S_IFMT bits

  // Guarded by `mutex`.
  std::mutex mutex;
  int fd = -1;                 // O_PATH descriptor of the backing inode; -1 when dormant or evicted
  index::Usage accounted;      // this inode's usage as the index currently counts it
  bool gone = false;           // unlinked everywhere, or its artifact was evicted

  // Guarded by InodeTable::mutex_.
  std::uint64_t nlookup = 0;
  ino_t parent = 0;            // backing ino of the directory it was last seen in
  std::string name;            // its name there; empty once that name was removed
  // Written under InodeTable::mutex_; atomic so that the hot path may read
  // them without it.
  std::atomic<int> depth{0};   // 0 for the root
  std::atomic<Role> role{Role::namespace_};
  std::shared_ptr<LiveArtifact> artifact;  // set for Role::artifact and Role::member

  bool is_dir() const { return S_ISDIR(type); }
};

using InodePtr = std::shared_ptr<Inode>;

inline constexpr std::size_t kMaxDormant = 1u << 18;

class InodeTable {
 public:
  // Takes ownership of root_fd (an O_PATH descriptor of the data root).
  InodeTable(int root_fd, ino_t root_ino);
  ~InodeTable();

  ino_t root_ino() const { return root_->ino; }
  const InodePtr& root() const { return root_; }

  // The inode for a node id the kernel holds; nullptr if unknown.
  InodePtr find(std::uint64_t node_id) const;
  // The inode the table has for a backing inode, dormant ones included.
  InodePtr find_backing(ino_t ino) const;

  // Registers a lookup of `name` in `parent` that found the backing inode
  // described by `st` (fd is an O_PATH fd the table takes over, or closes if
  // the inode is already open). `place` is called under the table lock for a
  // new or dormant inode to assign depth, role and artifact.
  // Increments nlookup by one.
  InodePtr remember(const InodePtr& parent, const std::string& name, const struct stat& st, int fd,
                    const std::function<void(const InodePtr& child, const Inode& parent)>& place);

  // Decrements nlookup; closes the fd of an inode nobody references.
  void forget(std::uint64_t node_id, std::uint64_t nlookup);

  // Where an inode was last seen: its parent directory (nullptr if unknown)
  // and its name there (empty once that name was removed).
  std::pair<InodePtr, std::string> place_of(const Inode& inode) const;

  // The backing relative path of a directory entry ("" for the root), from
  // the parent chain. Empty optional if the chain is broken.
  std::optional<std::string> path_of(const Inode& inode) const;

  // Name bookkeeping after namespace operations.
  void renamed(ino_t ino, ino_t new_parent, const std::string& new_name);
  void unlinked(ino_t parent, const std::string& name, ino_t child);

  // Reopens a dormant inode from its parent chain (NFS lookups of "." after
  // the kernel forgot it). Returns nullptr if it no longer exists there.
  InodePtr revive(std::uint64_t node_id);

  // Inodes whose parent chain passes through `dir` (dir included).
  std::vector<InodePtr> subtree(ino_t dir) const;

  // Calls fn for every inode in the table (under the table lock).
  void for_each(const std::function<void(Inode&)>& fn);

  // Lock for callers that update naming fields of several inodes at once.
  std::mutex& mutex() const { return mutex_; }

 private:
  InodePtr revive_locked(const InodePtr& inode, int depth_guard);
  std::optional<std::string> path_of_locked(const Inode& inode) const;
  std::uint64_t new_node_id_locked(ino_t backing_ino);
  void erase_locked(const InodePtr& inode);

  mutable std::mutex mutex_;  // see CONCURRENCY MODEL
  std::unordered_map<std::uint64_t, InodePtr> by_node_;  // every inode, dormant ones included
  std::unordered_map<ino_t, InodePtr> by_backing_;       // the current inode of each backing inode
  std::uint64_t next_private_id_ = 1ull << 63;
  // Dormant inodes, oldest first (may hold ids revived since: checked when
  // popped). Bounds the memory kept for NFS handles of forgotten inodes.
  std::deque<std::uint64_t> dormant_;
  InodePtr root_;
};

}  // namespace artifactfs::fs

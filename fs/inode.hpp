// Inodes the kernel knows (or knew), the table that maps FUSE node ids to
// them, and the bounded cache of their backing descriptors.
//
// CONCURRENCY MODEL
// FUSE worker threads, the flush thread and the quota thread all use the
// table. `InodeTable::mutex_` guards the map and every Inode's naming fields
// (nlookup, parent, name, depth, artifact, role). `cache_mutex_` guards the
// ring of inodes holding a cached descriptor. `Inode::mutex` guards the
// cached fd, its pin count and the accounted usage. Lock order:
// InodeTable::mutex_, then cache_mutex_, then Inode::mutex; none is held
// across a fuse_reply_* call, an index write or a reopen. Callers hold
// Inode objects by shared_ptr, so a concurrent forget never frees an inode
// under an operation.
//
// DESCRIPTORS
// The daemon keeps at most `fuse.max-open-nodes` O_PATH descriptors of
// inodes, whatever the kernel caches. An operation pins the descriptor it
// uses (NodeFd); a cache hit costs the inode's mutex and no system call.
// Unpinned descriptors are closed by a CLOCK sweep (a recently used one gets
// a second chance, so directories used often stay open) when the cache is
// over its limit, and at once when the inode is forgotten, unlinked or
// evicted (so that deleting it frees space). A regular file that was opened
// read-only also caches one O_RDONLY description beside its O_PATH one
// (`read_fd`, counted in the same limit, closed with it): a read-only open
// takes a duplicate of it, one dup() instead of reopening through
// /proc/self/fd, which costs a path walk through procfs on every open. The
// duplicates share one file offset, which nothing uses (reads, writes and
// lseek's answers all carry explicit offsets). An inode without a descriptor
// is opened again by its backing file handle (open_by_handle_at) when the
// daemon has CAP_DAC_READ_SEARCH, else through its parent chain from the
// nearest cached ancestor, one component at a time with O_NOFOLLOW, checking
// the inode number and type (and the file handle, which carries the
// generation) of what it finds.
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
#include <cstring>
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
#include "index/node_table.hpp"

namespace artifactfs::fs {

// What an entry is in the cache layout.
enum class Role {
  root,       // the mount root
  namespace_, // a directory above the artifact depth
  kept,       // matches layout.keep (or lies below such an entry): never an artifact
  artifact,   // the root of an artifact
  member,     // inside an artifact
};

// The backing filesystem's file handle of an inode (name_to_handle_at):
// identifies it for the inode's whole life, generation included.
struct BackingHandle {
  static constexpr unsigned kMaxBytes = 40;  // ext4 and tmpfs use 8, xfs up to 24, btrfs up to 40
  unsigned size = 0;                         // 0: none (too large, or not supported)
  int type = 0;
  unsigned char bytes[kMaxBytes]{};
  bool operator==(const BackingHandle& o) const {
    return size == o.size && type == o.type && std::memcmp(bytes, o.bytes, size) == 0;
  }
};
// The handle of the inode open as `fd`; size 0 if the filesystem has none.
BackingHandle handle_of(int fd);
// As stored in the node table (type, then bytes), and back.
std::string encode_handle(const BackingHandle& handle);
// Opens the inode behind the O_PATH descriptor `path_fd` again with `flags`
// (through /proc/self/fd): the descriptor names the inode itself, so
// nothing is resolved by name and no symlink can be followed.
int reopen_inode(int path_fd, int flags);
// The FUSE generation of an inode: the backing inode's generation where the
// handle carries it (ext4, tmpfs, xfs: type FILEID_INO32_GEN), else a hash
// of the handle. A reused inode number has another generation, so the
// kernel answers ESTALE for a file handle of the old file.
std::uint64_t generation_of(const BackingHandle& handle);

struct Inode {
  Inode(std::uint64_t node, ino_t backing_ino, mode_t type) : node(node), ino(backing_ino), type(type) {}
  const std::uint64_t node;  // FUSE node id
  const ino_t ino;           // backing inode number
  const mode_t type;  // S_IFMT bits

  // Guarded by `mutex`.
  std::mutex mutex;
  int fd = -1;                 // cached O_PATH descriptor, -1 if none (see DESCRIPTORS)
  int fd_pins = 0;             // NodeFds using `fd`: it is not closed while pinned
  int read_fd = -1;            // cached O_RDONLY description of a regular file, only while `fd` is
  bool in_ring = false;        // listed in the table's ring of cached descriptors
  BackingHandle handle;        // set when first looked up
  index::Usage accounted;      // this inode's usage as the index currently counts it
  bool gone = false;           // unlinked everywhere, or its artifact was evicted
  std::atomic<bool> fd_recent{false};  // used since the CLOCK hand last passed
  // The kernel was asked to drop its cached pages, and the daemon has not
  // served a read of it since (fs/long_held.hpp; no lock).
  std::atomic<bool> pages_dropped{false};

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

class InodeTable;

// A pinned backing descriptor of an inode, valid while this object lives.
class NodeFd {
 public:
  NodeFd() = default;
  NodeFd(NodeFd&& other) noexcept { *this = std::move(other); }
  NodeFd& operator=(NodeFd&& other) noexcept;
  NodeFd(const NodeFd&) = delete;
  NodeFd& operator=(const NodeFd&) = delete;
  ~NodeFd() { release(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  friend class InodeTable;
  void release();
  InodeTable* table_ = nullptr;
  InodePtr inode_;
  int fd_ = -1;
};

inline constexpr std::size_t kMaxDormant = 1u << 18;

class InodeTable {
 public:
  // Takes ownership of root_fd (an O_PATH descriptor of the data root).
  // Keeps at most `max_open` other descriptors; `mount_fd` is any
  // descriptor on the backing filesystem, for open_by_handle_at.
  InodeTable(int root_fd, ino_t root_ino, std::size_t max_open, int mount_fd);
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
  // With count_lookup == false the kernel is not told about the inode (an
  // ancestor resolved for an NFS handle): it stays dormant.
  InodePtr remember(const InodePtr& parent, const std::string& name, const struct stat& st, int fd,
                    const std::function<void(const InodePtr& child, const Inode& parent)>& place,
                    bool count_lookup = true);
  // Where inodes live, persistently (node_table.hpp); kept up to date by
  // remember() and renamed(). May be null (unit tests).
  void set_node_table(index::NodeTable* nodes) { nodes_ = nodes; }
  index::NodeTable* node_table() const { return nodes_; }

  // Decrements nlookup; closes the fd of an inode nobody references.
  void forget(std::uint64_t node_id, std::uint64_t nlookup);

  // The inode's backing descriptor, pinned: from the cache, else opened
  // again (see DESCRIPTORS). Empty with errno set (ENOENT: gone; ESTALE: not
  // found where it was) if it cannot be had.
  NodeFd open(const InodePtr& inode);
  // A new descriptor of the regular file `inode` open for reading only,
  // for a read-only FUSE handle: a duplicate of its cached read-only
  // description, which is made from `pinned` (its O_PATH descriptor, pinned
  // by the caller) on first use. -1 with errno set on failure.
  int open_for_reading(const InodePtr& inode, const NodeFd& pinned);
  // Closes the inode's cached descriptor now, or when its last pin goes
  // (after an eviction or an unlink, so that deletion frees space).
  void close_fd(Inode& inode);
  // Descriptors cached now (the root's not counted), and the limit.
  std::size_t open_descriptors() const { return open_count_.load(std::memory_order_relaxed); }
  std::size_t max_open_descriptors() const { return max_open_; }
  // Whether inodes are opened again by file handle (CAP_DAC_READ_SEARCH).
  bool reopens_by_handle() const { return by_handle_; }

  // Where an inode was last seen: its parent directory (nullptr if unknown)
  // and its name there (empty once that name was removed).
  std::pair<InodePtr, std::string> place_of(const Inode& inode) const;

  // The backing relative path of a directory entry ("" for the root), from
  // the parent chain. Empty optional if the chain is broken.
  std::optional<std::string> path_of(const Inode& inode) const;

  // Name bookkeeping after namespace operations.
  void renamed(ino_t ino, ino_t new_parent, const std::string& new_name);
  void unlinked(ino_t parent, const std::string& name, ino_t child);

  // The inode for a node id handed out earlier, also a dormant one (NFS
  // lookups of "." after the kernel forgot it), if it can still be opened.
  InodePtr revive(std::uint64_t node_id);

  // Inodes whose parent chain passes through `dir` (dir included).
  std::vector<InodePtr> subtree(ino_t dir) const;

  // Calls fn for every inode in the table (under the table lock).
  void for_each(const std::function<void(Inode&)>& fn);

  // Lock for callers that update naming fields of several inodes at once.
  std::mutex& mutex() const { return mutex_; }

 private:
  friend class NodeFd;
  std::optional<std::string> path_of_locked(const Inode& inode) const;
  // Pins the cached descriptor; -1 if there is none.
  int pin_cached(Inode& inode);
  void unpin(Inode& inode);
  int reopen(const InodePtr& inode);
  int reopen_through_parents(const InodePtr& inode);
  // Caches `fd` for `inode` (or closes it if another thread was first) and
  // pins it; sweeps the ring if the cache is over its limit.
  int adopt_fd(const InodePtr& inode, int fd);
  void sweep_if_over_limit();
  void sweep_locked();       // cache_mutex_ held
  void prune_ring_locked();  // cache_mutex_ held
  void close_unpinned_locked(Inode& inode);  // Inode::mutex held
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

  index::NodeTable* nodes_ = nullptr;
  const std::size_t max_open_;
  const int mount_fd_;
  bool by_handle_ = false;
  std::atomic<std::size_t> open_count_{0};
  std::mutex cache_mutex_;           // see CONCURRENCY MODEL
  std::vector<InodePtr> ring_;       // inodes that may hold a cached descriptor
  std::size_t hand_ = 0;             // the CLOCK hand: next index of ring_ to look at
};

}  // namespace artifactfs::fs

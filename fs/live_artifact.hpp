// In-memory state of artifacts that are in use: open handles and operations
// in progress (leases), the eviction mark, and the inodes that belong to them.
//
// CONCURRENCY MODEL
// `ArtifactRegistry::mutex_` guards the id -> LiveArtifact map.
// `LiveArtifact::mutex` guards leases, evicted and members. An eviction
// takes the artifact's mutex, checks that no lease is held and sets evicted;
// a lease taken before that wins, a lease asked for after it fails. Lock
// order: InodeTable mutex, then ArtifactRegistry::mutex_, then
// LiveArtifact::mutex, then Inode::mutex.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "index/index.hpp"

namespace artifactfs::fs {

struct Inode;

// An artifact whose usage changed this recently counts as being written,
// even between two operations on it (a tool creating its files one after
// the other holds no handle in between): routine cleanups leave it alone
// whatever quota.min-age says. Only a writer that ran out of space may take
// it, when nothing older is left.
inline constexpr std::chrono::seconds kWriteGrace{2};

struct LiveArtifact {
  explicit LiveArtifact(index::ArtifactId id) : id(id) {}
  const index::ArtifactId id;

  std::mutex mutex;
  int leases = 0;          // open handles plus operations in progress
  bool evicted = false;    // removed from the mount; never cleared
  std::vector<std::weak_ptr<Inode>> members;  // inodes the table placed in it (some may be gone)
  // Its top entries, once looked up: one, or every member of a group
  // (fs/artifact_groups.hpp).
  std::vector<std::weak_ptr<Inode>> roots;
  std::atomic<std::int64_t> last_write_ns{0};  // last change of its usage (no lock)

  // Adds an inode to `members` (caller holds `mutex`). Entries of inodes
  // that are gone are pruned whenever the list has doubled since the last
  // pruning, so a user creating and deleting files in one artifact for ever
  // keeps it as long as the live inodes, amortised O(1) per call.
  void add_member_locked(const std::shared_ptr<Inode>& inode);
  // Adds a top entry to `roots` unless it is there (caller holds `mutex`);
  // entries of inodes that are gone are dropped.
  void add_root_locked(const std::shared_ptr<Inode>& inode);
  std::vector<std::shared_ptr<Inode>> live_roots_locked() const;

 private:
  std::size_t prune_at_ = 64;
};

// Live state exists while something uses it: inodes placed in the artifact
// and leases hold it; the registry only finds it (weak references, pruned as
// the map doubles), so its size follows what the kernel holds, not the store.
class ArtifactRegistry {
 public:
  // The live state of `id`, created on first use.
  std::shared_ptr<LiveArtifact> get(index::ArtifactId id);
  // nullptr when nothing is live for `id`.
  std::shared_ptr<LiveArtifact> find(index::ArtifactId id) const;
  void erase(index::ArtifactId id);

 private:
  mutable std::mutex mutex_;
  std::unordered_map<index::ArtifactId, std::weak_ptr<LiveArtifact>> live_;
  std::size_t prune_at_ = 1024;
};

// Holds an artifact in use for its lifetime. Empty (and always valid) for
// entries outside any artifact.
class Lease {
 public:
  Lease() = default;
  // Fails (valid() == false) if the artifact was evicted.
  explicit Lease(std::shared_ptr<LiveArtifact> artifact);
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  bool valid() const { return valid_; }
  const std::shared_ptr<LiveArtifact>& artifact() const { return artifact_; }

 private:
  void release();
  std::shared_ptr<LiveArtifact> artifact_;
  bool valid_ = true;
};

}  // namespace artifactfs::fs

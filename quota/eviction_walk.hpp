// One pass over the index's least-recently-used order, evicting as the
// caller asks. Shared by the periodic cleanup and the ENOSPC path so that
// both apply exactly the same protections.
//
// A walk pages through the LRU table with the (last_access, id) cursor of the
// last record it saw, so each victim costs O(log n) and a walk never starts
// over from the oldest record.
//
// BATCHES
// Each eviction is still one step of its own (the Evictor renames the
// artifact into the trash under the namespace lock and queues its record's
// removal with Index::remove_artifact_queued, so readers stop seeing it at
// once). The walk commits the queued removals, with the totals and
// statistics, in one index write transaction per batch: after kBatchSize
// evictions or kBatchTime after the batch's first one, whichever comes
// first, and in commit() (which callers run when the walk ends; the
// destructor does it too). One transaction per victim cost more than the
// rename itself at a million artifacts. Likewise a cleanup's walk hands each
// page of candidates to Evictor::prepare() before it evicts any of them (the
// file system marks them in the index's changed set in one write) and keeps
// that until it leaves the page.
//
// A crash before a batch's commit leaves the records of artifacts already in
// the trash. The next mount's recovery re-walks the marked candidates (or
// the whole tree) and drops them; Trash::start() then removes any such
// record a recovery did not know of (fs/trash.hpp). Either way the index
// ends equal to the data tree.
//
// CONCURRENCY MODEL
// A walk is used by one thread at a time (the caller holds the quota
// manager's cleanup mutex) and owns no thread. Its commits take the index's
// flush lock, never while the Evictor holds the namespace lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "index/index.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::quota {

class EvictionWalk {
 public:
  // Artifacts last accessed after `protect_after` are too young to evict.
  EvictionWalk(index::Index& index, Evictor& evictor, index::TimeNs protect_after, Evictor::Need need,
               index::EvictionReason reason, std::size_t page_size = 256);

  ~EvictionWalk();  // commit(), errors logged
  EvictionWalk(const EvictionWalk&) = delete;
  EvictionWalk& operator=(const EvictionWalk&) = delete;

  // Evicts the least recently used artifact that is not pinned, too young or
  // in use. False once none is left. Commits the batch when it is full.
  bool evict_next();
  // Commits the removals of the evictions so far (see BATCHES). A failed
  // write is logged and leaves them queued in the index, whose next flush
  // retries: the evictions themselves are done, and an index on a full disk
  // must not stop the walk that frees it.
  void commit();

  static constexpr std::size_t kBatchSize = 1000;
  static constexpr std::chrono::milliseconds kBatchTime{50};

  std::uint64_t evicted() const { return evicted_; }
  std::uint64_t bytes_freed() const { return bytes_freed_; }
  std::uint64_t last_bytes_freed() const { return last_bytes_freed_; }
  std::uint64_t skipped_protected() const { return skipped_protected_; }

 private:
  bool next_record(index::ArtifactRecord& out);
  bool too_young(const index::ArtifactRecord& record) const { return record.last_access > protect_after_; }

  index::Index& index_;
  Evictor& evictor_;
  index::TimeNs protect_after_;
  Evictor::Need need_;
  index::EvictionReason reason_;
  std::size_t page_size_;

  std::vector<index::ArtifactRecord> page_;
  std::shared_ptr<void> prepared_;  // Evictor::prepare() of page_
  std::size_t position_ = 0;
  std::optional<std::pair<index::TimeNs, index::ArtifactId>> cursor_;
  bool finished_ = false;

  std::size_t batch_ = 0;  // evictions not yet committed
  std::chrono::steady_clock::time_point batch_started_;

  std::uint64_t evicted_ = 0;
  std::uint64_t bytes_freed_ = 0;
  std::uint64_t last_bytes_freed_ = 0;
  std::uint64_t skipped_protected_ = 0;
};

}  // namespace artifactfs::quota

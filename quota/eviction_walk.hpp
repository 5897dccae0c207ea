// One pass over the index's least-recently-used order, evicting as the
// caller asks. Shared by the periodic cleanup and the ENOSPC path so that
// both apply exactly the same protections.
//
// A walk pages through the LRU table with the (last_access, id) cursor of the
// last record it saw, so each victim costs O(log n) and a walk never starts
// over from the oldest record.
//
// EXACT ORDER
// The table orders artifacts by their last flushed access; uses recorded
// since (in memory until the next flush) only make an artifact younger. The
// walk therefore keeps the records it has read in a heap ordered by their
// latest use, flushed or not, and hands out the heap's oldest only once no
// unread record can be older: every unread record sits after the last one
// read, and its latest use is at least where it sits. An artifact used a
// moment ago is never taken before one used minutes ago, without a flush
// before the walk. A candidate used again after it was read goes back into
// the heap with its new time.
//
// WHERE A WALK ENDS
// At the first artifact (in that order) that is too young (min-age) or,
// for a routine cleanup, being written (the write grace): everything after
// it was used more recently, and evicting it instead would break the LRU
// order. Both protections are temporary, so the walk says when the first
// one ends (retry_at()). Pinned artifacts and artifacts in use are passed
// over: those protections last as long as the pin or the open.
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
#include <queue>
#include <utility>
#include <vector>

#include "index/index.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::quota {

class EvictionWalk {
 public:
  // Artifacts last used after `protect_after` are too young to evict; they
  // stay protected until `min_age` after their last use. `reason` goes into
  // the eviction log with each eviction.
  EvictionWalk(index::Index& index, Evictor& evictor, index::TimeNs protect_after, std::chrono::nanoseconds min_age,
               Evictor::Need need, index::EvictionReason reason, std::size_t page_size = 256);

  ~EvictionWalk();  // commit(), errors logged
  EvictionWalk(const EvictionWalk&) = delete;
  EvictionWalk& operator=(const EvictionWalk&) = delete;

  // Evicts the least recently used artifact that is not pinned or in use,
  // unless the walk ends first (WHERE A WALK ENDS). False once none is left.
  // Commits the batch when it is full.
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
  // After evict_next() returned false: the wall-clock time (ns since the
  // epoch) at which the temporary protection that ended the walk ends, or 0
  // if the walk ran out of candidates (what is left is pinned or in use).
  index::TimeNs retry_at() const { return retry_at_; }

 private:
  struct Candidate {
    index::ArtifactRecord record;  // last_access: its latest use, flushed or not
  };
  struct YoungerFirst {  // for a min-heap on (last_access, id)
    bool operator()(const Candidate& a, const Candidate& b) const {
      return std::pair{a.record.last_access, a.record.id} > std::pair{b.record.last_access, b.record.id};
    }
  };
  // The next candidate in the order of latest use; false at the end.
  bool next_record(index::ArtifactRecord& out);
  // Reads the next page of the table into the heap; false at its end.
  bool read_page();
  bool too_young(const index::ArtifactRecord& record) const { return record.last_access > protect_after_; }
  void end(index::TimeNs retry_at);

  index::Index& index_;
  Evictor& evictor_;
  index::TimeNs protect_after_;
  std::chrono::nanoseconds min_age_;
  Evictor::Need need_;
  index::EvictionReason reason_;
  std::size_t page_size_;

  std::priority_queue<Candidate, std::vector<Candidate>, YoungerFirst> heap_;
  std::shared_ptr<void> prepared_;  // Evictor::prepare() of the last page read
  // Stored position of the last record read: every unread record sits after it.
  std::optional<std::pair<index::TimeNs, index::ArtifactId>> cursor_;
  bool table_done_ = false;  // every page read
  bool ended_ = false;       // WHERE A WALK ENDS
  index::TimeNs retry_at_ = 0;

  std::size_t batch_ = 0;  // evictions not yet committed
  std::chrono::steady_clock::time_point batch_started_;

  std::uint64_t evicted_ = 0;
  std::uint64_t bytes_freed_ = 0;
  std::uint64_t last_bytes_freed_ = 0;
  std::uint64_t skipped_protected_ = 0;
};

}  // namespace artifactfs::quota

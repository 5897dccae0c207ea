// The LMDB access index: one record per artifact (usage, creation, last
// access, access count, pin), store totals, statistics, and the hard-link
// table that keeps accounting exact when one inode has several names.
//
// CONCURRENCY MODEL
// Every public method may be called from any thread.
// - Hot-path calls (record_access, charge, charge_total, count) touch only
//   memory: they take `pending_mutex` for a few map operations and never
//   wait on LMDB. Totals are kept in memory and are exact at all times.
// - flush() moves the pending batch out under `pending_mutex`, then applies
//   it in one LMDB write transaction. The FlushThread calls it every
//   flush interval; the quota thread calls it before choosing victims.
//   Readers merge a batch that is in flight, so no read ever misses it or
//   counts it twice (decided by LMDB transaction ids; see index.cpp).
// - Structural changes (add/rename/remove artifact, pins, link table) are
//   written synchronously in their own write transaction.
// - Writes of this process are serialised in the LMDB wrapper (LMDB would
//   serialise them anyway). A shared lock is held by every transaction and
//   taken exclusively only to grow the map.
// - Read transactions are short and end before any callback runs:
//   for_each_with_prefix's callback may call back into the index.
// Lock order: flush_mutex (flush and rebuild commit), then the wrapper's
// write and resize locks, then pending_mutex. pending_mutex is taken inside
// transactions only for a few map operations; it is never held while
// calling LMDB or waiting for anything.
//
// DURABILITY
// The environment is opened MDB_NOSYNC and flush() ends with mdb_env_sync, so
// a killed process loses nothing that was committed and at most one flush
// interval of access times and usage deltas. The meta record "clean" is
// cleared at open and set by close_clean(); a store whose last shutdown was
// not clean is reconciled against the data tree by the file system layer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <chrono>

namespace artifactfs::index {

using ArtifactId = std::uint64_t;  // 0 means "outside every artifact"
using TimeNs = std::int64_t;       // nanoseconds since the Unix epoch (CLOCK_REALTIME)
using InodeNumber = std::uint64_t;

inline constexpr ArtifactId kOutside = 0;
// Longest artifact name (path below the data root) the index can key: LMDB's limit.
inline constexpr std::size_t kMaxArtifactName = 511;

// Usage of a set of inodes, or a change to it. Signed so that one type serves
// both the amounts and the deltas.
struct Usage {
  std::int64_t disk_bytes = 0;      // st_blocks * 512, every inode counted once
  std::int64_t apparent_bytes = 0;  // st_size, every inode counted once
  std::int64_t files = 0;           // non-directory inodes, counted once
  Usage& operator+=(const Usage& o) {
    disk_bytes += o.disk_bytes;
    apparent_bytes += o.apparent_bytes;
    files += o.files;
    return *this;
  }
  Usage operator-() const { return {-disk_bytes, -apparent_bytes, -files}; }
  bool operator==(const Usage&) const = default;
};

struct ArtifactRecord {
  ArtifactId id = 0;
  std::string name;  // path below the data root, '/'-separated, no leading '/'
  Usage usage;
  TimeNs created = 0;
  TimeNs last_access = 0;
  std::uint64_t access_count = 0;
  bool pinned = false;
  // The backing inode of the artifact's top entry, so that an eviction can
  // check it is removing what the record describes; 0 if not known.
  InodeNumber root_ino = 0;
};

struct Totals {
  Usage usage;                      // the whole data tree, what `du` reports for it
  std::uint64_t artifact_count = 0;
};

struct Stats {
  std::uint64_t hits = 0;             // opens inside artifacts
  std::uint64_t misses = 0;           // lookups of absent artifact names
  std::uint64_t evictions = 0;
  std::uint64_t bytes_evicted = 0;
  std::uint64_t cleanup_runs = 0;
  std::uint64_t cleanup_ns = 0;       // total time spent in cleanup runs
  std::uint64_t protected_skips = 0;  // artifacts passed over because protected
};

enum class Stat { hits, misses, evictions, bytes_evicted, cleanup_runs, cleanup_ns, protected_skips };

// Where an inode with several names has them: artifact -> number of names.
using LinkSet = std::map<ArtifactId, std::uint32_t>;

class IndexError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The files exist but cannot be trusted: wrong schema, LMDB says corrupt.
class IndexCorrupt : public IndexError {
 public:
  using IndexError::IndexError;
};

struct IndexOptions {
  std::uint64_t initial_map_size = 64ull << 20;  // grown on demand, never a failure
};

class Index {
 public:
  // Opens or creates the index in `dir` (created if missing). Throws
  // IndexCorrupt for files that are not a usable index, IndexError otherwise.
  static std::unique_ptr<Index> open(const std::filesystem::path& dir, const IndexOptions& = {});
  ~Index();  // flushes once more (best effort); does not mark the index clean
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // --- lifecycle -----------------------------------------------------------
  // Whether the previous user of this index called close_clean(). A new
  // index counts as clean. Sampled at open(), which then marks the index in
  // use (durably) so that a crash from here on is detected.
  bool previous_shutdown_clean() const;
  // flush(), mark clean, sync. Called once at unmount. Does not mark the
  // index clean after mark_inconsistent(): the next mount then reconciles.
  void close_clean();
  // The index may disagree with the data tree (a change of the tree whose
  // bookkeeping failed half-way): the next mount re-walks the tree.
  void mark_inconsistent();

  // --- reads (LMDB read transaction, merged with the pending batch) ---------
  std::optional<ArtifactId> find(std::string_view name) const;
  std::optional<ArtifactRecord> get(ArtifactId id) const;
  // Artifacts in ascending last-access order, starting strictly after
  // (after_access, after_id) when given. O(log n + limit).
  // The order is that of the last flush: accesses not yet flushed do not
  // move an artifact (callers flush() first), although the returned
  // records carry them merged. To page, pass the last_access and id of the
  // last record returned; a merged time newer than the record's stored
  // position is handled (paging resumes from the stored position).
  std::vector<ArtifactRecord> least_recently_used(std::size_t limit,
                                                  std::optional<std::pair<TimeNs, ArtifactId>> after = {}) const;
  // Visits every artifact whose name starts with `prefix` (name order).
  // Reads in chunks; `fn` runs with no transaction open and may call into
  // the index. Artifacts added or removed during the walk may or may not
  // be visited.
  void for_each_with_prefix(std::string_view prefix, const std::function<void(const ArtifactRecord&)>& fn) const;
  Totals totals() const;  // memory only, exact
  Usage outside_usage() const;  // usage of entries that belong to no artifact
  Stats stats() const;          // memory only
  std::optional<LinkSet> links(InodeNumber ino) const;

  // --- hot path (memory only, never waits on LMDB) --------------------------
  void record_access(ArtifactId id, TimeNs when);
  void charge(ArtifactId id, const Usage& delta);  // per-artifact (or kOutside) usage
  void charge_total(const Usage& delta);           // store totals
  void count(Stat which, std::uint64_t n = 1);

  // --- structural changes (synchronous write transaction) -------------------
  // Fails with IndexError if the name is taken, empty or longer than LMDB's
  // key limit (511 bytes). last_access starts at `created`.
  ArtifactId add_artifact(std::string_view name, TimeNs created, const Usage& usage, InodeNumber root_ino = 0);
  // IndexError if `new_name` is taken or `id` is unknown.
  void rename_artifact(ArtifactId id, std::string_view new_name);
  // Exchanges the names of two artifacts in one transaction (RENAME_EXCHANGE
  // of two artifact roots). IndexError if either is unknown.
  void swap_names(ArtifactId a, ArtifactId b);
  // Deletes the record and forgets its pending changes. Totals are not
  // touched: the caller charges what was really freed.
  std::optional<ArtifactRecord> remove_artifact(ArtifactId id);
  void set_pinned(ArtifactId id, bool pinned);  // IndexError if `id` is unknown
  void set_links(InodeNumber ino, const LinkSet& links);  // empty set erases

  // Applies the pending batch (access times, usage, stats) in one transaction
  // and syncs the environment. Safe to call at any time from any thread.
  // Returns the artifacts whose last access changed (ascending ids).
  // Pending changes of artifacts removed meanwhile are dropped. With
  // nothing pending it writes nothing (it only syncs earlier commits).
  // If the write fails the batch is kept for the next flush.
  std::vector<ArtifactId> flush();

  // --- reconciliation after a crash ----------------------------------------
  // Replaces every record's usage, the outside usage, the totals and the link
  // table with what a walk of the data tree found. Artifacts the walk found
  // keep their id, creation time, last access, access count and pin; new
  // ones are added (created = last_access = the given time); records the
  // walk did not find are removed. Committed in chunks; the index is marked
  // consistent only by commit(), which does not set the clean flag (call
  // close_clean() at unmount as usual). Meant to run before requests are
  // served: commit() discards usage deltas charged to artifacts before it
  // (the walk measured them), and totals/outside charged during the walk
  // are replaced by the walk's. A link naming an artifact the walk did not
  // report is ignored with a warning.
  class Rebuild {
   public:
    virtual ~Rebuild() = default;
    virtual void artifact(std::string_view name, const Usage& usage, TimeNs created, InodeNumber root_ino = 0) = 0;
    virtual void outside(const Usage& usage) = 0;
    virtual void total(const Usage& usage) = 0;
    // Names of an inode with more than one link, by artifact name ("" for
    // outside every artifact); called after the artifact() calls it names.
    virtual void links(InodeNumber ino, const std::map<std::string, std::uint32_t>& names_by_artifact) = 0;
    virtual void commit() = 0;
  };
  std::unique_ptr<Rebuild> begin_rebuild();

 private:
  struct Impl;
  explicit Index(std::unique_ptr<Impl>);
  std::unique_ptr<Impl> impl_;
};

// Runs index.flush() every `interval` on its own thread until destroyed.
// after_flush runs on that thread after every successful flush, with the
// ids flush() returned (possibly empty). A failed flush is logged and
// retried at the next interval. Destroy it before the Index, and before
// close_clean() so that its final flush is part of the clean state.
class FlushThread {
 public:
  FlushThread(Index& index, std::chrono::milliseconds interval,
              std::function<void(const std::vector<ArtifactId>&)> after_flush = {});
  ~FlushThread();  // stops the thread and flushes once more
  FlushThread(const FlushThread&) = delete;
  FlushThread& operator=(const FlushThread&) = delete;
  void wake();  // flush now without waiting for the interval

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace artifactfs::index

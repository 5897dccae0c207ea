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
//   written synchronously in their own write transaction, except
//   remove_artifact_queued(): memory at once (readers no longer see the
//   record), LMDB at the next commit_removals() or flush(), in one
//   transaction with every other queued removal.
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
// interval of access times and usage deltas (and the removals queued since
// the last commit_removals(), whose records it leaves in place; see there).
// The meta record "clean" is cleared at open and set by close_clean(); a
// store whose last shutdown was not clean is reconciled against the data
// tree by the file system layer: after a kill -9 only what the changed set
// names (CHANGED SET below), after a power loss the whole tree.
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

// Why an artifact was evicted, kept with it in the eviction log.
enum class EvictionReason : std::uint8_t {
  quota = 1,           // the quota thread's cleanup (over the limit)
  make_room = 2,       // a write, create or mkdir got ENOSPC
  manual_evict = 3,    // `artifactfs evict KEY`
  manual_cleanup = 4,  // `artifactfs cleanup --to SIZE`
};
// "quota", "make-room", "evict", "cleanup": the names the log prints.
std::string_view reason_name(EvictionReason reason);
std::optional<EvictionReason> reason_from_name(std::string_view name);

// One line of the eviction log: what went, when and why, with the facts the
// record had at that moment.
struct EvictionEntry {
  TimeNs when = 0;
  ArtifactId id = 0;
  std::string name;
  Usage usage;
  TimeNs created = 0;
  TimeNs last_access = 0;
  std::uint64_t access_count = 0;
  EvictionReason reason = EvictionReason::quota;
};

// Evictions since a moment, from the log.
struct EvictionSummary {
  std::uint64_t evictions = 0;
  std::uint64_t disk_bytes = 0;
  // False when the log, being bounded, dropped entries from that period:
  // the counts are then a lower bound.
  bool complete = true;
};

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
  // Entries the eviction log keeps; the oldest are dropped beyond it.
  std::size_t eviction_log_limit = 100000;
  // Inspection of a store no daemon serves (`artifactfs status --store`):
  // nothing is written, the index is not marked in use, and every method
  // that writes throws IndexError.
  bool read_only = false;
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
  // `positions`, if given, receives each record's stored position (the
  // last access it is ordered by, which a merged time may exceed), so that a
  // caller can put records with unflushed accesses in their true place
  // (quota/eviction_walk.hpp) and page on with the stored position.
  std::vector<ArtifactRecord> least_recently_used(std::size_t limit,
                                                  std::optional<std::pair<TimeNs, ArtifactId>> after = {},
                                                  std::vector<TimeNs>* positions = nullptr) const;
  // Visits every artifact whose name starts with `prefix` (name order).
  // Reads in chunks; `fn` runs with no transaction open and may call into
  // the index. Artifacts added or removed during the walk may or may not
  // be visited.
  void for_each_with_prefix(std::string_view prefix, const std::function<void(const ArtifactRecord&)>& fn) const;
  Totals totals() const;  // memory only, exact
  Usage outside_usage() const;  // usage of entries that belong to no artifact
  Stats stats() const;          // memory only
  std::optional<LinkSet> links(InodeNumber ino) const;

  // --- eviction log (index/eviction_log.cpp) --------------------------------
  // Queues a log entry; it is committed with the eviction's record removal
  // (commit_removals() or flush()), oldest entries dropped beyond
  // IndexOptions::eviction_log_limit. Memory only, like the hot path.
  void log_eviction(const ArtifactRecord& record, EvictionReason reason, TimeNs when);
  // Entries with when >= since, oldest first, at most `limit` (the newest
  // ones if there are more). Includes entries not committed yet.
  std::vector<EvictionEntry> eviction_log(TimeNs since, std::size_t limit = SIZE_MAX) const;
  EvictionSummary evictions_since(TimeNs since) const;

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

  // --- batched removal (eviction at scale) ---------------------------------
  // Removes an artifact's record in memory at once and queues its LMDB
  // delete for the next commit_removals() or flush(), so that an eviction
  // run commits thousands of removals in one write transaction instead of
  // one transaction each. From the call on, find(), get(),
  // least_recently_used() and for_each_with_prefix() do not see the record,
  // totals().artifact_count does not count it, and its name is free:
  // add_artifact() and rename_artifact() may take it (the queued record is
  // then deleted in their own transaction). Returns the record with every
  // pending change merged (what it counted when it went), or nullopt if it
  // is unknown or already removed. Totals are not touched, as with
  // remove_artifact(). Costs one short read transaction, no write.
  // Until the commit a crash leaves the record in LMDB: the caller must make
  // that repairable (the file system names an evicted artifact's trash
  // entry after its id, and Trash::start() removes such records).
  std::optional<ArtifactRecord> remove_artifact_queued(ArtifactId id);
  // Commits the queued removals together with the statistics in one write
  // transaction (the totals follow at the next flush(), which commits them
  // as of its batch: see CHANGED SET; until then each removed record leaves
  // a tombstone with what the committed totals count for it). Access times
  // and usage deltas stay
  // pending for the next flush() (so the flush thread still reports changed
  // access times). Does not sync; the next flush() does (a killed process
  // loses nothing committed). Returns how many removals it committed.
  // If the write fails the removals stay queued.
  std::size_t commit_removals();
  // Removals queued and not yet committed.
  std::size_t queued_removals() const;
  // Gives back memory that grows with the store, not with use: the index
  // pages mapped into the process by reads (a rebuild, an eviction run, a
  // walk of the LRU order read every page; they stay in the page cache) and
  // the allocator's free memory (malloc_trim). Called by the FlushThread
  // every kReleaseInterval and by the quota manager after a large eviction
  // run. Cheap (page-table work in the kernel); safe at any time.
  void release_memory();
  static constexpr std::chrono::seconds kReleaseInterval{30};
  // --- end of batched removal ------------------------------------------------

  // Applies the pending batch (access times, usage, stats, queued removals)
  // in one transaction and syncs the environment. Safe to call at any time
  // from any thread. Returns the artifacts whose last access changed
  // (ascending ids). Pending changes of artifacts removed meanwhile are
  // dropped. With
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

  // ===== CHANGED SET: crash recovery proportional to what changed ===========
  // (owned by the crash-recovery change; fs/recover_changed.cpp is its user)
  //
  // After a kill -9 the next mount re-walks only what may disagree with the
  // committed index: the keys of the table `dirty`. A key is written (one
  // small synchronous write transaction, not fsynced) by begin_change()
  // BEFORE the backing change it covers is made, and deleted by the first
  // flush that commits every charge of that change, in that flush's own
  // write transaction.
  //
  // Keys: artifact(id) covers the artifact's usage and record; outside()
  // covers the outside usage (namespaces, kept entries, the data root);
  // path(p) covers an entry at namespace level (an artifact root, namespace
  // or kept entry made, removed or renamed there: recovery looks at that
  // name, and below it for a namespace); links() says a hard link shared
  // with something no walk of artifacts sees changed (the trash): recovery
  // then walks the whole tree.
  //
  // ORDERING. begin_change() returns only after the rows of its keys are
  // committed. An LMDB commit under MDB_NOSYNC is in the page cache: it
  // survives the death of the process, not of the system. The backing change
  // (a syscall on the data tree, also in the page cache) comes after it, so
  // after a kill -9 every change the index may not have counted is covered
  // by a committed key. A power loss or kernel crash may drop either in any
  // order: the boot id recorded at open tells the next mount that the system
  // restarted, and it then walks the whole tree (clean flag = 0 as before).
  // After a power loss `--rebuild-index` is never needed for accounting; it
  // is still the answer to an index LMDB itself cannot read.
  //
  // CLEARING. A Change counts as in progress on its keys until destroyed,
  // and its charges come before its end. A flush takes the keys that have a
  // row and no change in progress at the moment it swaps the pending batch
  // (under pending_mutex), so every charge of every change on them is in its
  // batch or an earlier committed one; it deletes their rows in its own
  // write transaction, after checking inside that transaction that no
  // begin_change() took a key back since the swap (see change_set.hpp: a
  // begin_change either keeps the row or rewrites it after the delete).
  // Totals and outside usage are committed as they were at the swap, so
  // that committed totals always match the committed records.
  //
  // REMOVED ARTIFACTS. A record deleted while the totals still count it
  // (remove_artifact, a queued removal's commit) leaves a tombstone: the
  // value of its artifact(id) row is the usage the committed totals count
  // for it; later usage deltas of the id go to the tombstone at each flush,
  // so that it drops to zero in the transaction that commits the totals
  // without it. Recovery subtracts the tombstones.
  //
  // TRUST. The set is used only if the index was not closed cleanly, the
  // process that last had it open kept the set (meta "changes_kept"; an older
  // version of artifactfs, mark_inconsistent(), or a full walk that did not
  // finish clear it) and the system has not restarted since (boot id).
  class ChangeKey {
   public:
    static ChangeKey artifact(ArtifactId id);
    static ChangeKey outside();
    static ChangeKey path(std::string_view path);  // below the data root, no leading '/'
    static ChangeKey links();
    const std::string& bytes() const { return bytes_; }  // the row key
    bool operator==(const ChangeKey&) const = default;

   private:
    explicit ChangeKey(std::string bytes) : bytes_(std::move(bytes)) {}
    std::string bytes_;
  };

  // A change in progress on some keys; ends when destroyed (after the
  // change's charges were made).
  class Change {
   public:
    Change() = default;
    Change(Change&& o) noexcept;
    Change& operator=(Change&& o) noexcept;
    Change(const Change&) = delete;
    Change& operator=(const Change&) = delete;
    ~Change();
    // Adds keys to a change in progress (the same guarantees as begin_change).
    void add(const std::vector<ChangeKey>& keys);

   private:
    friend class Index;
    Index* index_ = nullptr;
    std::vector<std::string> keys_;
  };
  // Commits the rows of `keys` that are not committed yet (the hot path
  // only looks them up in memory) and counts the change as in progress.
  // Throws IndexError if the rows cannot be written: the caller must then
  // not make the change.
  Change begin_change(const std::vector<ChangeKey>& keys);

  // Charges that belong together (several artifacts and the totals for one
  // change of the tree), in one step: a flush takes all or none of them.
  void charge_together(const std::vector<std::pair<ArtifactId, Usage>>& artifacts, const Usage& total);

  struct ChangedSet {
    bool usable = false;  // the marks may be trusted for a partial recovery
    std::string why_not;  // if not
    std::vector<ArtifactId> artifacts;       // artifact(id) rows without tombstone
    std::map<ArtifactId, Usage> tombstones;  // removed records the committed totals still count
    std::vector<std::string> paths;
    bool outside = false;
    bool links = false;
  };
  ChangedSet changed_set() const;

  // Outside tops: every entry at namespace level that belongs to no artifact
  // (namespace directories, kept entries, other non-artifact entries there),
  // so that recovery can re-measure the outside usage without listing
  // namespaces full of artifacts. Kept by the file system layer under the
  // path(p) keys of its changes.
  std::vector<std::string> outside_tops() const;
  // Replaces the tops at and below `path` (synchronous; no write if equal).
  void replace_outside_tops(std::string_view path, const std::vector<std::string>& tops);
  // Link records that name one of `units` (kOutside for outside entries).
  std::vector<std::pair<InodeNumber, LinkSet>> links_naming(const std::vector<ArtifactId>& units) const;

  // What a partial recovery found, committed in one write transaction that
  // also clears the changed set. Meant to run before requests are served.
  struct Recovery {
    struct Found {
      std::string name;
      Usage usage;
      TimeNs created = 0;
      InodeNumber root_ino = 0;
    };
    std::vector<std::pair<ArtifactId, Found>> updated;  // existing records (name may change)
    std::vector<ArtifactId> removed;
    std::vector<Found> added;
    // Link records by artifact name ("" for outside); an empty map erases.
    std::vector<std::pair<InodeNumber, std::map<std::string, std::uint32_t>>> links;
    std::vector<std::string> tops_replaced;  // tops at and below these paths are replaced by `tops`
    std::vector<std::string> tops;
    Usage total;
    Usage outside;
  };
  void commit_recovery(const Recovery& recovery);
  // After a full walk (rebuild committed): the outside tops it found; clears
  // the changed set and trusts it again.
  void full_walk_done(const std::vector<std::string>& tops);
  // ===== end of CHANGED SET ==================================================

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

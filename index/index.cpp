// The Index: LMDB tables plus an in-memory batch of hot-path changes.
//
// CONCURRENCY MODEL (refines the comment in index.hpp)
// - `pending_mutex` guards the pending batch, the in-flight batch pointer,
//   and the memory totals, outside usage and stats. It is held only for map
//   operations and never while waiting for anything else.
// - `flush_mutex` serialises flush() and the final step of a rebuild, so
//   that meta is written from memory in the order memory changed and at
//   most one batch is in flight.
// - LMDB writes go through Env::write() (one writer at a time in this
//   process, retried after the map grows); reads use short read
//   transactions that end before any user callback runs.
// Lock order: flush_mutex, then Env's write/resize locks (inside a
// transaction), then pending_mutex.
//
// EXACT READS WHILE A FLUSH IS IN FLIGHT
// flush() moves the pending batch to `in_flight` and applies it in write
// transaction W. A reader whose snapshot is older than W must add the
// in-flight batch; a reader whose snapshot includes W must not. The LMDB
// transaction id decides: `in_flight_txn` is W's id while W may commit and
// kNotCommitted otherwise. After W commits the batch is dropped and
// `last_cleared_txn` = W; a reader whose snapshot is older than that has
// missed the batch and simply reads again.
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <atomic>
#include <mutex>
#include <unordered_map>

#include "index/change_set.hpp"
#include "index/codec.hpp"
#include "index/eviction_log.hpp"
#include "index/index.hpp"
#include "index/lmdb.hpp"

namespace artifactfs::index {

namespace {

// Version 1: tables meta, artifacts, names, lru, links as below.
constexpr std::uint64_t kSchemaVersion = 1;
// Room for more tables than we use (meta, artifacts, names, lru, links, and
// the changed set's dirty and outside_tops); opening with more costs nothing.
constexpr unsigned kMaxTables = 16;
// Artifacts per write transaction during a rebuild, and per read
// transaction when visiting by prefix: bounds transaction size and the time
// a snapshot pins old pages.
constexpr std::size_t kRebuildChunk = 10000;
constexpr std::size_t kReadChunk = 1000;
constexpr std::uint64_t kNotCommitted = std::numeric_limits<std::uint64_t>::max();

// Keys of the meta table.
constexpr std::string_view kMetaSchema = "schema_version";
constexpr std::string_view kMetaClean = "clean";
constexpr std::string_view kMetaNextId = "next_id";
constexpr std::string_view kMetaTotals = "totals";
constexpr std::string_view kMetaOutside = "outside";
constexpr std::string_view kMetaStats = "stats";
// Changed set (see CHANGED SET in index.hpp): whether the process that has
// the index open keeps it; the boot id it ran under; whether the
// outside_tops table has been filled by a full walk.
constexpr std::string_view kMetaChangesKept = "changes_kept";
constexpr std::string_view kMetaBootId = "boot_id";
constexpr std::string_view kMetaTopsReady = "outside_tops_ready";

struct Pending {
  TimeNs last_access = std::numeric_limits<TimeNs>::min();  // max of the recorded accesses
  std::uint64_t accesses = 0;
  Usage usage;
  // remove_artifact_queued(): the record is gone for readers; the batch
  // that carries this deletes it from LMDB.
  bool removed = false;

  void add(const Pending& o) {
    last_access = std::max(last_access, o.last_access);
    accesses += o.accesses;
    usage += o.usage;
    removed = removed || o.removed;
  }
  void apply_to(ArtifactRecord& rec) const {
    // An access older than the stored one must not move last_access back.
    rec.last_access = std::max(rec.last_access, last_access);
    rec.access_count += accesses;
    rec.usage += usage;
  }
};

using Batch = std::unordered_map<ArtifactId, Pending>;

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

struct Index::Impl {
  Impl(const std::filesystem::path& dir, const IndexOptions& options)
      : env(dir, options.initial_map_size, kMaxTables, options.read_only),
        max_name(env.max_key_size()),
        log_limit(options.eviction_log_limit),
        read_only(options.read_only) {}

  mutable lmdb::Env env;  // reads through const methods begin transactions
  MDB_dbi meta = 0, artifacts = 0, names = 0, lru = 0, links = 0;
  // --- changed set (see CHANGED SET in index.hpp; code at the end of this file)
  MDB_dbi dirty = 0, tops = 0;
  // --- eviction log (eviction_log.cpp); absent in a read-only open of an
  // index made before it existed.
  std::optional<MDB_dbi> evictions;
  ChangeSet changes;
  bool changes_usable = false;
  std::string changes_why_not;
  // The one-byte file "changes_kept" beside data.mdb: '1' while the set is
  // kept. Overwritten in place, so that distrusting the set needs no new
  // disk space (a full store must not make a change fail, nor let a later
  // recovery trust a set that misses it). Trusted only if meta agrees.
  int kept_fd = -1;
  bool kept_at_open = false;
  std::atomic<bool> distrusted{false};  // this process cannot keep the set any more
  bool previous_clean = true;
  std::atomic<bool> inconsistent{false};  // see mark_inconsistent()
  std::size_t max_name;
  std::size_t log_limit;
  bool read_only;

  std::mutex flush_mutex;

  mutable std::mutex pending_mutex;
  Batch pending;
  const Batch* in_flight = nullptr;
  std::uint64_t in_flight_txn = kNotCommitted;
  std::uint64_t last_cleared_txn = 0;
  Totals totals;
  Usage outside;
  Stats stats;
  bool meta_dirty = false;  // totals, outside or stats changed since written
  // Ids of the `pending` entries marked removed, so that commit_removals()
  // takes them without scanning the whole batch. Each id at most once: an
  // id is queued once, and is in `pending` or in flight, never both.
  std::vector<ArtifactId> queued_removal_ids;
  // Eviction log entries not committed yet, and those of the batch in
  // flight (read like `in_flight`: see EXACT READS above).
  std::vector<EvictionEntry> pending_log;
  const std::vector<EvictionEntry>* in_flight_log = nullptr;
  // A structural write committed since the last sync (MDB_NOSYNC).
  std::atomic<bool> unsynced{false};

  // --- helpers -----------------------------------------------------------------

  // Runs a decoder; a malformed value becomes IndexCorrupt naming the file
  // and the table.
  template <typename Fn>
  auto decode(std::string_view table, Fn&& fn) const {
    try {
      return fn();
    } catch (const IndexCorrupt& e) {
      throw IndexCorrupt(env.data_file().string() + ": table '" + std::string(table) + "': " + e.what());
    }
  }

  [[noreturn]] void corrupt(const std::string& what) const {
    throw IndexCorrupt(env.data_file().string() + ": " + what);
  }

  void check_name(std::string_view name) const {
    if (name.empty()) throw IndexError("artifact name is empty");
    if (name.size() > max_name) {
      throw IndexError("artifact name longer than the index allows (" + std::to_string(max_name) +
                       " bytes): " + std::string(name));
    }
  }

  std::optional<ArtifactRecord> load_record(const lmdb::Txn& txn, ArtifactId id) const {
    auto v = txn.get(artifacts, codec::be64(id));
    if (!v) return std::nullopt;
    return decode("artifacts", [&] { return codec::read_record_value(id, *v); });
  }

  ArtifactRecord load_existing(const lmdb::Txn& txn, ArtifactId id) const {
    auto rec = load_record(txn, id);
    if (!rec) throw IndexError("no artifact with id " + std::to_string(id));
    return std::move(*rec);
  }

  std::optional<ArtifactId> lookup_name(const lmdb::Txn& txn, std::string_view name) const {
    auto v = txn.get(names, name);
    if (!v) return std::nullopt;
    return decode("names", [&] { return codec::read_be64(*v); });
  }

  std::uint64_t meta_u64(const lmdb::Txn& txn, std::string_view key) const {
    auto v = txn.get(meta, key);
    if (!v) corrupt("meta has no '" + std::string(key) + "'");
    return decode("meta", [&] { return codec::read_u64_value(*v); });
  }

  Usage meta_usage(const lmdb::Txn& txn, std::string_view key) const {
    auto v = txn.get(meta, key);
    if (!v) corrupt("meta has no '" + std::string(key) + "'");
    return decode("meta", [&] { return codec::read_usage_value(*v); });
  }

  void put_record(lmdb::WriteTxn& txn, const ArtifactRecord& rec) {
    txn.put(artifacts, codec::be64(rec.id), codec::record_value(rec));
  }

  void erase_record(lmdb::WriteTxn& txn, const ArtifactRecord& rec) {
    txn.del(artifacts, codec::be64(rec.id));
    // The name may already belong to another id only if the tables
    // disagree; never delete someone else's name.
    if (lookup_name(txn, rec.name) == rec.id) txn.del(names, rec.name);
    txn.del(lru, codec::lru_key(rec.last_access, rec.id));
  }

  // Adds what is not yet in a snapshot to records read from it. Caller
  // holds pending_mutex. `snapshot` is the id of the newest commit the
  // records reflect. False if the record is removed (a queued removal).
  bool merge_locked(ArtifactRecord& rec, std::uint64_t snapshot) const {
    bool removed = false;
    if (in_flight && (in_flight_txn == kNotCommitted || in_flight_txn > snapshot)) {
      if (auto it = in_flight->find(rec.id); it != in_flight->end()) {
        it->second.apply_to(rec);
        removed = it->second.removed;
      }
    }
    if (auto it = pending.find(rec.id); it != pending.end()) {
      it->second.apply_to(rec);
      removed = removed || it->second.removed;
    }
    return !removed;
  }

  // Whether `id`, present in a snapshot, has a removal queued that the
  // snapshot does not reflect. Caller holds pending_mutex.
  bool queued_removal_locked(ArtifactId id, std::uint64_t snapshot) const {
    if (in_flight && (in_flight_txn == kNotCommitted || in_flight_txn > snapshot)) {
      if (auto it = in_flight->find(id); it != in_flight->end() && it->second.removed) return true;
    }
    auto it = pending.find(id);
    return it != pending.end() && it->second.removed;
  }
  // The same, taking the lock: for reads inside a transaction (a few map
  // lookups; see the lock order).
  bool queued_removal(ArtifactId id, std::uint64_t snapshot) const {
    std::lock_guard lock(pending_mutex);
    return queued_removal_locked(id, snapshot);
  }

  // In a write transaction: if the record `id` has a queued removal not yet
  // committed, deletes it now (the batch that carries the removal then finds
  // no record) and returns true. A write transaction sees every commit, so
  // only a batch that has not committed can still hold such a record.
  bool drop_if_queued(lmdb::WriteTxn& txn, ArtifactId id) {
    {
      std::lock_guard lock(pending_mutex);
      if (!queued_removal_locked(id, kNotCommitted - 1)) return false;
    }
    if (auto rec = load_record(txn, id)) {
      erase_record(txn, *rec);
      put_tombstone(txn, id, rec->usage);  // changed set: the totals still count it
    }
    return true;
  }

  // Reads records in a read transaction, ends it, then merges the pending
  // changes; repeats if a flush committed and dropped its batch in between.
  template <typename Fn>
  std::vector<ArtifactRecord> read_merged(Fn&& read) const {
    for (;;) {
      std::vector<ArtifactRecord> records;
      std::uint64_t snapshot = 0;
      {
        auto txn = env.read();
        records = read(txn);
        snapshot = txn.id();
      }
      std::lock_guard lock(pending_mutex);
      if (last_cleared_txn > snapshot) continue;
      std::erase_if(records, [&](ArtifactRecord& rec) { return !merge_locked(rec, snapshot); });
      return records;
    }
  }

  void write_meta_from_memory(lmdb::WriteTxn& txn) {
    Totals t;
    Usage o;
    Stats s;
    {
      std::lock_guard lock(pending_mutex);
      t = totals;
      o = outside;
      s = stats;
      meta_dirty = false;
    }
    txn.put(meta, kMetaTotals, codec::usage_value(t.usage));
    txn.put(meta, kMetaOutside, codec::usage_value(o));
    txn.put(meta, kMetaStats, codec::stats_value(s));
  }

  // A structural write: committed now, synced by the next flush().
  template <typename Fn>
  void write(Fn&& fn) {
    env.write(std::forward<Fn>(fn));
    unsynced = true;
  }

  void open_tables();
  void open_tables_read_only();
  // In the flush's write transaction (eviction_log.hpp).
  void write_log(lmdb::WriteTxn& txn, const std::vector<EvictionEntry>& entries) {
    if (evictions) eviction_log::append(txn, *evictions, meta, entries, log_limit);
  }
  // --- changed set (defined at the end of this file) ---
  void open_changed_set(lmdb::WriteTxn& txn, bool fresh);
  // A tombstone: `id`'s record is gone, the committed totals count `usage`
  // for it. `by_flush`: in the flush's own transaction (see ChangeSet).
  void put_tombstone(lmdb::WriteTxn& txn, ArtifactId id, const Usage& usage, bool by_flush = false);
  // Adds `delta` to `id`'s tombstone, if it has one.
  bool add_to_tombstone(lmdb::WriteTxn& txn, ArtifactId id, const Usage& delta);
  bool read_kept_flag() const;
  bool write_kept_flag(bool kept);
  void trust_changes();  // after a full walk or a recovery committed (meta already 1)
  // The set can no longer be trusted (a mark that could not be written, a
  // failed bookkeeping, a full walk under way). Throws if even the flag
  // file cannot say so.
  void distrust_changes();
  // Caller holds flush_mutex. `removals_only`: commit_removals().
  std::vector<ArtifactId> flush(bool removals_only = false, std::size_t* removals = nullptr);

  class RebuildImpl;
};

// --- open / close --------------------------------------------------------------------

void Index::Impl::open_tables() {
  // Changed set: the flag file (see kept_fd).
  kept_fd = ::open((env.dir() / "changes_kept").c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  env.write([&](lmdb::WriteTxn& txn) {
    auto main = txn.open_dbi(nullptr, false);
    bool fresh = txn.entries(*main) == 0;
    auto open_table = [&](const char* name) {
      auto dbi = txn.open_dbi(name, fresh);
      if (!dbi) corrupt(std::string("table '") + name + "' is missing");
      return *dbi;
    };
    meta = open_table("meta");
    artifacts = open_table("artifacts");
    names = open_table("names");
    lru = open_table("lru");
    links = open_table("links");
    // The changed set's tables, also in an index made before they existed.
    dirty = *txn.open_dbi("dirty", true);
    tops = *txn.open_dbi("outside_tops", true);
    evictions = *txn.open_dbi("evictions", true);  // also in an index made before it existed
    if (fresh) {
      txn.put(meta, kMetaSchema, codec::u64_value(kSchemaVersion));
      txn.put(meta, kMetaNextId, codec::u64_value(1));
      txn.put(meta, kMetaTotals, codec::usage_value({}));
      txn.put(meta, kMetaOutside, codec::usage_value({}));
      txn.put(meta, kMetaStats, codec::stats_value({}));
      previous_clean = true;
    } else {
      auto version = meta_u64(txn, kMetaSchema);
      if (version != kSchemaVersion) {
        corrupt("schema version " + std::to_string(version) + ", this build reads version " +
                std::to_string(kSchemaVersion));
      }
      previous_clean = meta_u64(txn, kMetaClean) == 1;
    }
    // From here on a crash is detectable.
    txn.put(meta, kMetaClean, codec::u64_value(0));
    totals.usage = meta_usage(txn, kMetaTotals);
    totals.artifact_count = txn.entries(artifacts);
    outside = meta_usage(txn, kMetaOutside);
    auto s = txn.get(meta, kMetaStats);
    if (!s) corrupt("meta has no 'stats'");
    stats = decode("meta", [&] { return codec::read_stats_value(*s); });
    meta_u64(txn, kMetaNextId);  // present, or the file is not ours
    open_changed_set(txn, fresh);  // whether the changed set can be trusted
  });
  env.sync();
  if (!write_kept_flag(kept_at_open)) kept_at_open = false;
  distrusted = !kept_at_open;
}

void Index::Impl::open_tables_read_only() {
  auto must = [&](const char* name) {
    auto dbi = env.open_existing_table(name);
    if (!dbi) corrupt(std::string("table '") + name + "' is missing");
    return *dbi;
  };
  meta = must("meta");
  artifacts = must("artifacts");
  names = must("names");
  lru = must("lru");
  links = must("links");
  evictions = env.open_existing_table("evictions");
  auto txn = env.read();
  auto version = meta_u64(txn, kMetaSchema);
  if (version != kSchemaVersion) {
    corrupt("schema version " + std::to_string(version) + ", this build reads version " +
            std::to_string(kSchemaVersion));
  }
  previous_clean = meta_u64(txn, kMetaClean) == 1;
  totals.usage = meta_usage(txn, kMetaTotals);
  totals.artifact_count = txn.entries(artifacts);
  outside = meta_usage(txn, kMetaOutside);
  auto s = txn.get(meta, kMetaStats);
  if (!s) corrupt("meta has no 'stats'");
  stats = decode("meta", [&] { return codec::read_stats_value(*s); });
  distrusted = true;  // writes nothing, so keeps no changed set
}

std::unique_ptr<Index> Index::open(const std::filesystem::path& dir, const IndexOptions& options) {
  auto impl = std::make_unique<Impl>(dir, options);
  if (options.read_only) {
    impl->open_tables_read_only();
    return std::unique_ptr<Index>(new Index(std::move(impl)));
  }
  impl->open_tables();
  return std::unique_ptr<Index>(new Index(std::move(impl)));
}

Index::Index(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Index::~Index() {
  // Best effort: keeps what was recorded, but leaves the index marked not
  // clean unless close_clean() ran.
  if (impl_->read_only) return;
  try {
    std::lock_guard flush_lock(impl_->flush_mutex);
    impl_->flush();
  } catch (const std::exception& e) {
    spdlog::error("index {}: final flush failed: {}", impl_->env.dir().string(), e.what());
  }
  if (impl_->kept_fd >= 0) ::close(impl_->kept_fd);
}

bool Index::previous_shutdown_clean() const { return impl_->previous_clean; }

void Index::close_clean() {
  auto& m = *impl_;
  std::lock_guard flush_lock(m.flush_mutex);
  m.flush();  // Impl::flush does not take flush_mutex; we hold it
  if (m.inconsistent) {
    spdlog::warn("index {}: left marked for a re-walk of the data tree at the next mount", m.env.dir().string());
  } else {
    m.env.write([&](lmdb::WriteTxn& txn) {
      txn.put(m.meta, kMetaClean, codec::u64_value(1));
      // Changed set: nothing is in progress any more, so nothing is marked;
      // and nobody keeps the set until the next open (an older artifactfs
      // may open the index next and would not keep it).
      txn.clear(m.dirty);
      txn.put(m.meta, kMetaChangesKept, codec::u64_value(0));
    });
    m.changes.reset();
  }
  m.env.sync();
}

void Index::mark_inconsistent() {
  impl_->inconsistent = true;
  // The changed set does not cover a change whose bookkeeping failed: the
  // next mount must walk the whole tree even after a kill -9.
  try {
    impl_->distrust_changes();
  } catch (const std::exception& e) {
    spdlog::error("index {}: could not record that the changed set is incomplete: {}", impl_->env.dir().string(),
                  e.what());
  }
}

// --- reads ---------------------------------------------------------------------------

std::optional<ArtifactId> Index::find(std::string_view name) const {
  auto& m = *impl_;
  if (name.empty() || name.size() > m.max_name) return std::nullopt;
  for (;;) {
    std::optional<ArtifactId> id;
    std::uint64_t snapshot = 0;
    {
      auto txn = m.env.read();
      id = m.lookup_name(txn, name);
      snapshot = txn.id();
    }
    if (!id) return id;
    // A queued removal hides the name (see read_merged for the retry).
    std::lock_guard lock(m.pending_mutex);
    if (m.last_cleared_txn > snapshot) continue;
    if (m.queued_removal_locked(*id, snapshot)) return std::nullopt;
    return id;
  }
}

std::optional<ArtifactRecord> Index::get(ArtifactId id) const {
  auto records = impl_->read_merged([&](const lmdb::Txn& txn) {
    std::vector<ArtifactRecord> out;
    if (auto rec = impl_->load_record(txn, id)) out.push_back(std::move(*rec));
    return out;
  });
  if (records.empty()) return std::nullopt;
  return std::move(records.front());
}

std::vector<ArtifactRecord> Index::least_recently_used(std::size_t limit,
                                                       std::optional<std::pair<TimeNs, ArtifactId>> after,
                                                       std::vector<TimeNs>* positions) const {
  auto& m = *impl_;
  if (limit == 0) return {};
  // Stored positions by id: read_merged may drop records (queued removals)
  // after the read, so they are matched up afterwards.
  std::map<ArtifactId, TimeNs> stored;
  auto records = m.read_merged([&](const lmdb::Txn& txn) {
    stored.clear();
    std::vector<ArtifactRecord> out;
    lmdb::Cursor cursor(txn, m.lru);
    std::string start;
    if (after) {
      // A caller that pages with a merged (newer, unflushed) last access
      // would skip what lies between; continue from where the record
      // really sits when that is earlier.
      TimeNs from = after->first;
      if (auto rec = m.load_record(txn, after->second); rec && rec->last_access < from) from = rec->last_access;
      start = codec::lru_key(from, after->second);
    }
    auto entry = cursor.seek(start);
    if (entry && after && entry->first == start) entry = cursor.next();
    for (; entry && out.size() < limit; entry = cursor.next()) {
      auto [when, id] = m.decode("lru", [&] { return codec::read_lru_key(entry->first); });
      // Skipped here, not after the read, so that a page is short only at
      // the end of the table.
      if (m.queued_removal(id, txn.id())) continue;
      auto rec = m.load_record(txn, id);
      if (!rec) m.corrupt("lru names artifact " + std::to_string(id) + ", which has no record");
      if (rec->last_access != when) {
        m.corrupt("lru key of artifact " + std::to_string(id) + " does not match its last access");
      }
      if (positions) stored[id] = when;
      out.push_back(std::move(*rec));
    }
    return out;
  });
  if (positions) {
    positions->clear();
    positions->reserve(records.size());
    for (const auto& rec : records) positions->push_back(stored.at(rec.id));
  }
  return records;
}

void Index::for_each_with_prefix(std::string_view prefix,
                                 const std::function<void(const ArtifactRecord&)>& fn) const {
  auto& m = *impl_;
  // Chunked so that the callback runs with no transaction open (it may call
  // back into the index) and a huge walk does not pin one snapshot.
  std::string resume(prefix);
  bool skip_resume = false;
  for (;;) {
    std::size_t scanned = 0;  // names read, queued removals included
    std::string last;
    auto records = m.read_merged([&](const lmdb::Txn& txn) {
      std::vector<ArtifactRecord> out;
      scanned = 0;
      lmdb::Cursor cursor(txn, m.names);
      auto entry = cursor.seek(resume);
      if (entry && skip_resume && entry->first == resume) entry = cursor.next();
      for (; entry && starts_with(entry->first, prefix) && scanned < kReadChunk; entry = cursor.next()) {
        ++scanned;
        last = std::string(entry->first);
        auto id = m.decode("names", [&] { return codec::read_be64(entry->second); });
        auto rec = m.load_record(txn, id);
        if (!rec) m.corrupt("name '" + std::string(entry->first) + "' has no record");
        out.push_back(std::move(*rec));
      }
      return out;
    });
    for (const auto& rec : records) fn(rec);
    if (scanned < kReadChunk) return;
    resume = std::move(last);
    skip_resume = true;
  }
}

Totals Index::totals() const {
  std::lock_guard lock(impl_->pending_mutex);
  return impl_->totals;
}

Usage Index::outside_usage() const {
  std::lock_guard lock(impl_->pending_mutex);
  return impl_->outside;
}

Stats Index::stats() const {
  std::lock_guard lock(impl_->pending_mutex);
  return impl_->stats;
}

std::optional<LinkSet> Index::links(InodeNumber ino) const {
  auto& m = *impl_;
  auto txn = m.env.read();
  auto v = txn.get(m.links, codec::be64(ino));
  if (!v) return std::nullopt;
  return m.decode("links", [&] { return codec::read_links_value(*v); });
}

// --- eviction log ------------------------------------------------------------------------

void Index::log_eviction(const ArtifactRecord& record, EvictionReason reason, TimeNs when) {
  EvictionEntry e{when, record.id, record.name, record.usage, record.created, record.last_access,
                  record.access_count, reason};
  std::lock_guard lock(impl_->pending_mutex);
  impl_->pending_log.push_back(std::move(e));
}

std::vector<EvictionEntry> Index::eviction_log(TimeNs since, std::size_t limit) const {
  auto& m = *impl_;
  for (;;) {
    std::vector<EvictionEntry> out;
    std::uint64_t snapshot = 0;
    if (m.evictions) {
      auto txn = m.env.read();
      out = m.decode("evictions", [&] { return eviction_log::read(txn, *m.evictions, since); });
      snapshot = txn.id();
    }
    {
      std::lock_guard lock(m.pending_mutex);
      if (m.last_cleared_txn > snapshot && m.evictions) continue;  // see read_merged
      auto add = [&](const std::vector<EvictionEntry>& entries) {
        for (const auto& e : entries) {
          if (e.when >= since) out.push_back(e);
        }
      };
      if (m.in_flight_log && (m.in_flight_txn == kNotCommitted || m.in_flight_txn > snapshot)) add(*m.in_flight_log);
      add(m.pending_log);
    }
    std::stable_sort(out.begin(), out.end(), [](const EvictionEntry& a, const EvictionEntry& b) {
      return a.when != b.when ? a.when < b.when : a.id < b.id;
    });
    if (out.size() > limit) out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
    return out;
  }
}

EvictionSummary Index::evictions_since(TimeNs since) const {
  EvictionSummary summary;
  for (const auto& e : eviction_log(since)) {
    ++summary.evictions;
    summary.disk_bytes += static_cast<std::uint64_t>(std::max<std::int64_t>(0, e.usage.disk_bytes));
  }
  auto txn = impl_->env.read();
  summary.complete = eviction_log::dropped_until(txn, impl_->meta) < since;
  return summary;
}

// --- hot path --------------------------------------------------------------------------

void Index::record_access(ArtifactId id, TimeNs when) {
  std::lock_guard lock(impl_->pending_mutex);
  auto& p = impl_->pending[id];
  p.last_access = std::max(p.last_access, when);
  ++p.accesses;
}

void Index::charge(ArtifactId id, const Usage& delta) {
  std::lock_guard lock(impl_->pending_mutex);
  if (id == kOutside) {
    impl_->outside += delta;
    impl_->meta_dirty = true;
  } else {
    impl_->pending[id].usage += delta;
  }
}

void Index::charge_total(const Usage& delta) {
  std::lock_guard lock(impl_->pending_mutex);
  impl_->totals.usage += delta;
  impl_->meta_dirty = true;
}

void Index::count(Stat which, std::uint64_t n) {
  std::lock_guard lock(impl_->pending_mutex);
  auto& s = impl_->stats;
  impl_->meta_dirty = true;
  switch (which) {
    case Stat::hits: s.hits += n; break;
    case Stat::misses: s.misses += n; break;
    case Stat::evictions: s.evictions += n; break;
    case Stat::bytes_evicted: s.bytes_evicted += n; break;
    case Stat::cleanup_runs: s.cleanup_runs += n; break;
    case Stat::cleanup_ns: s.cleanup_ns += n; break;
    case Stat::protected_skips: s.protected_skips += n; break;
  }
}

// --- structural changes ------------------------------------------------------------------

ArtifactId Index::add_artifact(std::string_view name, TimeNs created, const Usage& usage, InodeNumber root_ino) {
  auto& m = *impl_;
  m.check_name(name);
  ArtifactId id = 0;
  m.write([&](lmdb::WriteTxn& txn) {
    if (auto taken = m.lookup_name(txn, name); taken && !m.drop_if_queued(txn, *taken)) {
      throw IndexError("artifact name already in the index: " + std::string(name));
    }
    id = m.meta_u64(txn, kMetaNextId);
    txn.put(m.meta, kMetaNextId, codec::u64_value(id + 1));
    ArtifactRecord rec{id, std::string(name), usage, created, created, 0, false, root_ino};
    m.put_record(txn, rec);
    txn.put(m.names, name, codec::be64(id));
    txn.put(m.lru, codec::lru_key(created, id), {});
  });
  std::lock_guard lock(m.pending_mutex);
  ++m.totals.artifact_count;
  return id;
}

void Index::rename_artifact(ArtifactId id, std::string_view new_name) {
  auto& m = *impl_;
  m.check_name(new_name);
  m.write([&](lmdb::WriteTxn& txn) {
    auto rec = m.load_existing(txn, id);
    if (rec.name == new_name) return;
    if (auto taken = m.lookup_name(txn, new_name); taken && !m.drop_if_queued(txn, *taken)) {
      throw IndexError("cannot rename artifact '" + rec.name + "': name already in the index: " +
                       std::string(new_name));
    }
    if (m.lookup_name(txn, rec.name) == id) txn.del(m.names, rec.name);
    txn.put(m.names, new_name, codec::be64(id));
    rec.name = std::string(new_name);
    m.put_record(txn, rec);
  });
}

void Index::swap_names(ArtifactId a, ArtifactId b) {
  auto& m = *impl_;
  if (a == b) return;
  m.write([&](lmdb::WriteTxn& txn) {
    auto first = m.load_existing(txn, a);
    auto second = m.load_existing(txn, b);
    std::swap(first.name, second.name);
    txn.put(m.names, first.name, codec::be64(first.id));
    txn.put(m.names, second.name, codec::be64(second.id));
    m.put_record(txn, first);
    m.put_record(txn, second);
  });
}

std::optional<ArtifactRecord> Index::remove_artifact(ArtifactId id) {
  auto& m = *impl_;
  std::optional<ArtifactRecord> removed;
  m.write([&](lmdb::WriteTxn& txn) {
    removed = m.load_record(txn, id);
    if (!removed) return;
    {
      // Removed already (queued): the queue's commit deletes the record.
      std::lock_guard lock(m.pending_mutex);
      if (m.queued_removal_locked(id, kNotCommitted - 1)) {
        removed.reset();
        return;
      }
    }
    m.erase_record(txn, *removed);
    // The committed totals still count the committed usage: a tombstone
    // (changed set), which later flushes bring to zero.
    m.put_tombstone(txn, id, removed->usage);
    // A batch still in flight will find no record and drop this id; count
    // its changes here. This transaction sees every commit before it.
    std::lock_guard lock(m.pending_mutex);
    if (m.in_flight && m.in_flight_txn == kNotCommitted) {
      if (auto it = m.in_flight->find(id); it != m.in_flight->end()) it->second.apply_to(*removed);
    }
  });
  if (!removed) return std::nullopt;
  std::lock_guard lock(m.pending_mutex);
  if (auto it = m.pending.find(id); it != m.pending.end()) {
    it->second.apply_to(*removed);
    // The usage deltas stay pending: the memory totals count them, so the
    // flush that commits those totals adds them to the tombstone. Access
    // times go with the record.
    it->second.last_access = std::numeric_limits<TimeNs>::min();
    it->second.accesses = 0;
  }
  --m.totals.artifact_count;
  return removed;
}

void Index::set_pinned(ArtifactId id, bool pinned) {
  auto& m = *impl_;
  m.write([&](lmdb::WriteTxn& txn) {
    auto rec = m.load_existing(txn, id);
    if (rec.pinned == pinned) return;
    rec.pinned = pinned;
    m.put_record(txn, rec);
  });
}

void Index::set_links(InodeNumber ino, const LinkSet& links) {
  auto& m = *impl_;
  m.write([&](lmdb::WriteTxn& txn) {
    if (links.empty()) {
      txn.del(m.links, codec::be64(ino));
    } else {
      txn.put(m.links, codec::be64(ino), codec::links_value(links));
    }
  });
}

// --- flush -------------------------------------------------------------------------------

std::vector<ArtifactId> Index::flush() {
  std::lock_guard flush_lock(impl_->flush_mutex);
  return impl_->flush();
}

// Caller holds flush_mutex.
std::vector<ArtifactId> Index::Impl::flush(bool removals_only, std::size_t* removals) {
  if (read_only) return {};
  Batch batch;
  std::vector<EvictionEntry> log_batch;
  // Changed set: the keys this flush may clear, and the totals as they were
  // at the swap (consistent with the batch: a charge is in the batch if and
  // only if its totals are in the snapshot). See CHANGED SET in index.hpp.
  std::vector<std::string> clearing;
  std::optional<std::pair<Totals, Usage>> snapshot;
  {
    std::unique_lock lock(pending_mutex);
    if (removals_only) {
      // Only the queued removals (and the meta records): access times and
      // usage deltas wait for the flush thread, which reports them.
      if (queued_removal_ids.empty() && !meta_dirty && pending_log.empty()) return {};
      batch.reserve(queued_removal_ids.size());
      for (ArtifactId id : queued_removal_ids) {
        if (auto node = pending.extract(id)) batch.insert(std::move(node));
      }
    } else {
      if (pending.empty() && !meta_dirty && !changes.has_clearable() && pending_log.empty()) {
        // Nothing to write: an idle flush thread must not touch the disk.
        lock.unlock();
        if (unsynced.exchange(false)) env.sync();
        return {};
      }
      batch.swap(pending);
      clearing = changes.take_clearable();
      snapshot.emplace(totals, outside);
      meta_dirty = false;
    }
    queued_removal_ids.clear();
    log_batch.swap(pending_log);
    in_flight = &batch;
    in_flight_log = &log_batch;
    in_flight_txn = kNotCommitted;
  }
  std::size_t erased = 0;
  std::vector<ArtifactId> changed;
  std::vector<std::pair<ArtifactId, Usage>> requeued;  // usage deltas for the next full flush
  std::uint64_t committed = 0;
  try {
    env.write(
        [&](lmdb::WriteTxn& txn) {
          committed = txn.id();
          {
            std::lock_guard lock(pending_mutex);
            in_flight_txn = committed;
          }
          changed.clear();
          erased = 0;
          requeued.clear();
          for (const auto& [id, p] : batch) {
            auto rec = load_record(txn, id);
            if (!rec) {
              // Removed meanwhile: its changes go with it, but the usage
              // deltas whose totals this commit counts go to its tombstone
              // (changed set). A removals-only commit writes no totals: they
              // wait for the next flush.
              if (removals_only) requeued.emplace_back(id, p.usage);
              else add_to_tombstone(txn, id, p.usage);
              continue;
            }
            if (p.removed) {
              erase_record(txn, *rec);
              ++erased;
              if (removals_only) {
                put_tombstone(txn, id, rec->usage, true);
                requeued.emplace_back(id, p.usage);
              } else {
                Usage counted = rec->usage;
                counted += p.usage;
                put_tombstone(txn, id, counted, true);
              }
              continue;
            }
            TimeNs before = rec->last_access;
            p.apply_to(*rec);
            if (rec->last_access != before) {
              txn.del(lru, codec::lru_key(before, id));
              txn.put(lru, codec::lru_key(rec->last_access, id), {});
              changed.push_back(id);
            }
            put_record(txn, *rec);
          }
          if (snapshot) {
            txn.put(meta, kMetaTotals, codec::usage_value(snapshot->first.usage));
            txn.put(meta, kMetaOutside, codec::usage_value(snapshot->second));
          }
          {
            // Statistics need no consistency with anything: the newest.
            std::lock_guard lock(pending_mutex);
            txn.put(meta, kMetaStats, codec::stats_value(stats));
          }
          write_log(txn, log_batch);
          // Changed set: rows of keys no change took back since the swap.
          for (const auto& key : changes.confirm_deletions(clearing)) txn.del(dirty, key);
        },
        [&] {
          std::lock_guard lock(pending_mutex);
          in_flight_txn = kNotCommitted;
        });
  } catch (...) {
    changes.deletions_aborted(clearing);
    // Nothing was applied: give the batch back so the next flush retries.
    std::lock_guard lock(pending_mutex);
    for (const auto& [id, p] : batch) {
      pending[id].add(p);
      if (p.removed) queued_removal_ids.push_back(id);
    }
    pending_log.insert(pending_log.begin(), std::make_move_iterator(log_batch.begin()),
                       std::make_move_iterator(log_batch.end()));
    in_flight = nullptr;
    in_flight_log = nullptr;
    in_flight_txn = kNotCommitted;
    meta_dirty = true;
    throw;
  }
  changes.deletions_committed(clearing);
  {
    std::lock_guard lock(pending_mutex);
    in_flight = nullptr;
    in_flight_log = nullptr;
    in_flight_txn = kNotCommitted;
    last_cleared_txn = committed;
    for (const auto& [id, usage] : requeued) {
      if (usage != Usage{}) pending[id].usage += usage;
    }
  }
  if (removals) *removals = erased;
  if (removals_only) {
    unsynced = true;  // the next flush() syncs
    return {};
  }
  unsynced = false;
  env.sync();
  std::sort(changed.begin(), changed.end());
  return changed;
}

// --- batched removal (eviction at scale) ---------------------------------------------

std::optional<ArtifactRecord> Index::remove_artifact_queued(ArtifactId id) {
  auto& m = *impl_;
  for (;;) {
    std::optional<ArtifactRecord> rec;
    std::uint64_t snapshot = 0;
    {
      auto txn = m.env.read();
      rec = m.load_record(txn, id);
      snapshot = txn.id();
    }
    std::lock_guard lock(m.pending_mutex);
    // A flush committed and dropped its batch since the read: read again
    // (see read_merged).
    if (m.last_cleared_txn > snapshot) continue;
    if (!rec || !m.merge_locked(*rec, snapshot)) return std::nullopt;  // unknown, or removed already
    m.pending[id].removed = true;
    m.queued_removal_ids.push_back(id);
    --m.totals.artifact_count;
    return rec;
  }
}

std::size_t Index::commit_removals() {
  auto& m = *impl_;
  std::lock_guard flush_lock(m.flush_mutex);
  std::size_t removals = 0;
  m.flush(true, &removals);
  return removals;
}

std::size_t Index::queued_removals() const {
  std::lock_guard lock(impl_->pending_mutex);
  return impl_->queued_removal_ids.size();
}

void Index::release_memory() {
  impl_->env.release_mapped_pages();
  malloc_trim(0);
}

// --- end of batched removal ------------------------------------------------------------

// --- rebuild -----------------------------------------------------------------------------

// A nested class of Impl, so that it may name Index's private parts.
class Index::Impl::RebuildImpl final : public Index::Rebuild {
 public:
  explicit RebuildImpl(Index::Impl& m) : m_(m) {}

  void artifact(std::string_view name, const Usage& usage, TimeNs created, InodeNumber root_ino) override {
    m_.check_name(name);
    artifacts_.push_back({std::string(name), usage, created, root_ino});
    if (artifacts_.size() + links_.size() >= kRebuildChunk) apply_chunk();
  }
  void outside(const Usage& usage) override { outside_ = usage; }
  void total(const Usage& usage) override { total_ = usage; }
  void links(InodeNumber ino, const std::map<std::string, std::uint32_t>& names_by_artifact) override {
    links_.emplace_back(ino, names_by_artifact);
    if (artifacts_.size() + links_.size() >= kRebuildChunk) apply_chunk();
  }
  void commit() override;

 private:
  struct Found {
    std::string name;
    Usage usage;
    TimeNs created;
    InodeNumber root_ino;
  };
  void apply_chunk();
  void remove_unseen();

  Index::Impl& m_;
  std::vector<Found> artifacts_;
  std::vector<std::pair<InodeNumber, std::map<std::string, std::uint32_t>>> links_;
  std::vector<ArtifactId> seen_;
  bool links_cleared_ = false;
  std::optional<Usage> outside_;
  std::optional<Usage> total_;
};

void Index::Impl::RebuildImpl::apply_chunk() {
  std::vector<ArtifactId> ids;
  std::uint64_t count = 0;
  m_.write([&](lmdb::WriteTxn& txn) {
    ids.clear();
    // The walk reports every multiply-linked inode, so the old table goes.
    if (!links_cleared_) txn.clear(m_.links);
    auto next_id = m_.meta_u64(txn, kMetaNextId);
    for (const auto& found : artifacts_) {
      auto id = m_.lookup_name(txn, found.name);
      std::optional<ArtifactRecord> rec;
      if (id) rec = m_.load_record(txn, *id);
      if (rec) {
        rec->usage = found.usage;
        rec->root_ino = found.root_ino;
      } else {
        // New, or a name whose record is gone: start afresh.
        rec = ArtifactRecord{next_id++, found.name, found.usage, found.created, found.created, 0, false,
                             found.root_ino};
        txn.put(m_.names, found.name, codec::be64(rec->id));
        txn.put(m_.lru, codec::lru_key(rec->last_access, rec->id), {});
      }
      m_.put_record(txn, *rec);
      ids.push_back(rec->id);
    }
    txn.put(m_.meta, kMetaNextId, codec::u64_value(next_id));
    for (const auto& [ino, by_name] : links_) {
      LinkSet set;
      for (const auto& [name, n] : by_name) {
        if (name.empty()) {
          set[kOutside] += n;
        } else if (auto id = m_.lookup_name(txn, name)) {
          set[*id] += n;
        } else {
          spdlog::warn("index rebuild: inode {} has links in unknown artifact '{}'; ignored", ino, name);
        }
      }
      if (!set.empty()) txn.put(m_.links, codec::be64(ino), codec::links_value(set));
    }
    count = txn.entries(m_.artifacts);
  });
  links_cleared_ = true;
  seen_.insert(seen_.end(), ids.begin(), ids.end());
  artifacts_.clear();
  links_.clear();
  std::lock_guard lock(m_.pending_mutex);
  m_.totals.artifact_count = count;
}

void Index::Impl::RebuildImpl::remove_unseen() {
  std::sort(seen_.begin(), seen_.end());
  ArtifactId resume = 0;
  for (bool done = false; !done;) {
    std::vector<ArtifactId> removed;
    std::uint64_t count = 0;
    ArtifactId next_resume = 0;
    m_.write([&](lmdb::WriteTxn& txn) {
      removed.clear();
      done = true;
      std::vector<ArtifactRecord> victims;
      {
        lmdb::Cursor cursor(txn, m_.artifacts);
        std::size_t scanned = 0;
        for (auto entry = cursor.seek(codec::be64(resume)); entry; entry = cursor.next()) {
          auto id = m_.decode("artifacts", [&] { return codec::read_be64(entry->first); });
          if (++scanned > kRebuildChunk) {
            next_resume = id;
            done = false;
            break;
          }
          if (std::binary_search(seen_.begin(), seen_.end(), id)) continue;
          victims.push_back(m_.decode("artifacts", [&] { return codec::read_record_value(id, entry->second); }));
        }
      }
      for (const auto& rec : victims) {
        m_.erase_record(txn, rec);
        removed.push_back(rec.id);
      }
      count = txn.entries(m_.artifacts);
    });
    resume = next_resume;
    std::lock_guard lock(m_.pending_mutex);
    for (auto id : removed) m_.pending.erase(id);
    m_.totals.artifact_count = count;
  }
}

void Index::Impl::RebuildImpl::commit() {
  apply_chunk();  // also clears the links table when the walk found none
  remove_unseen();
  // Holding flush_mutex: a flush must not write the old totals over these.
  std::lock_guard flush_lock(m_.flush_mutex);
  {
    std::lock_guard lock(m_.pending_mutex);
    if (total_) m_.totals.usage = *total_;
    if (outside_) m_.outside = *outside_;
    // The walk measured the usage; deltas charged before it are in it.
    for (auto& [id, p] : m_.pending) p.usage = {};
  }
  m_.env.write([&](lmdb::WriteTxn& txn) { m_.write_meta_from_memory(txn); });
  m_.env.sync();
}

std::unique_ptr<Index::Rebuild> Index::begin_rebuild() {
  // A rebuild commits in chunks: until full_walk_done() the changed set
  // describes nothing (a crash in between must walk everything again).
  impl_->distrust_changes();
  return std::make_unique<Impl::RebuildImpl>(*impl_);
}

// ===== CHANGED SET (crash recovery proportional to what changed) ===================
// See CHANGED SET in index.hpp for what it means and why it is right, and
// change_set.hpp for the hand-over between begin_change() and flush().
// Rows of the table `dirty`: 'a' + be64(id) -> "" or a tombstone (usage
// value); 'o' -> ""; 'l' -> ""; 'p' + path -> "". Table `outside_tops`:
// path -> "".

namespace {

std::string current_boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

bool under(std::string_view path, std::string_view top) {
  if (top.empty()) return true;
  return path == top || (path.size() > top.size() && path.substr(0, top.size()) == top && path[top.size()] == '/');
}

// Deletes the outside tops at and below `top`.
void erase_tops(lmdb::WriteTxn& txn, MDB_dbi tops, std::string_view top) {
  lmdb::Cursor cursor(txn, tops);
  for (auto entry = cursor.seek(top); entry && under(entry->first, top);) {
    cursor.del();
    entry = cursor.seek(top);
  }
}

}  // namespace

Index::ChangeKey Index::ChangeKey::artifact(ArtifactId id) { return ChangeKey("a" + codec::be64(id)); }
Index::ChangeKey Index::ChangeKey::outside() { return ChangeKey("o"); }
Index::ChangeKey Index::ChangeKey::path(std::string_view path) { return ChangeKey("p" + std::string(path)); }
Index::ChangeKey Index::ChangeKey::links() { return ChangeKey("l"); }

void Index::Impl::open_changed_set(lmdb::WriteTxn& txn, bool fresh) {
  const std::string boot = current_boot_id();
  auto flag = [&](std::string_view key) {
    auto v = txn.get(meta, key);
    return v && decode("meta", [&] { return codec::read_u64_value(*v); }) == 1;
  };
  const bool tops_ready = flag(kMetaTopsReady);
  changes_usable = false;
  if (fresh || previous_clean) {
    changes_why_not = "the index was closed cleanly";
    txn.clear(dirty);  // nothing was in progress
  } else if (!flag(kMetaChangesKept) || !tops_ready || !read_kept_flag()) {
    changes_why_not =
        "the index does not record what changed (made by an older artifactfs, a change whose accounting failed, "
        "or a full walk that did not finish)";
  } else if (auto stored = txn.get(meta, kMetaBootId); boot.empty() || !stored || *stored != boot) {
    changes_why_not = "the system restarted since the index was last used (a power loss may have lost changes)";
  } else {
    changes_usable = true;
  }
  // From here on this process keeps the set (unless it cannot be trusted
  // yet: then only a full walk makes it whole again).
  const bool kept = changes_usable || ((fresh || previous_clean) && tops_ready);
  txn.put(meta, kMetaChangesKept, codec::u64_value(kept ? 1 : 0));
  txn.put(meta, kMetaBootId, boot);
  kept_at_open = kept;  // the flag file follows after the commit
}

bool Index::Impl::read_kept_flag() const {
  char c = 0;
  return kept_fd >= 0 && pread(kept_fd, &c, 1, 0) == 1 && c == '1';
}

bool Index::Impl::write_kept_flag(bool kept) {
  const char c = kept ? '1' : '0';
  return kept_fd >= 0 && pwrite(kept_fd, &c, 1, 0) == 1;
}

void Index::Impl::trust_changes() {
  if (inconsistent) return;
  if (write_kept_flag(true)) distrusted = false;
}

void Index::Impl::distrust_changes() {
  distrusted = true;
  // The flag first: it needs no space. A missing flag file distrusts too.
  const bool flagged = kept_fd < 0 || write_kept_flag(false);
  try {
    write([&](lmdb::WriteTxn& txn) { txn.put(meta, kMetaChangesKept, codec::u64_value(0)); });
  } catch (const std::exception& e) {
    if (!flagged) {
      throw IndexError("cannot record that the changed set is incomplete (" + std::string(std::strerror(errno)) +
                       ", " + e.what() + ")");
    }
  }
}

void Index::Impl::put_tombstone(lmdb::WriteTxn& txn, ArtifactId id, const Usage& usage, bool by_flush) {
  auto key = ChangeKey::artifact(id).bytes();
  txn.put(dirty, key, codec::usage_value(usage));
  changes.persisted(key, by_flush);
}

bool Index::Impl::add_to_tombstone(lmdb::WriteTxn& txn, ArtifactId id, const Usage& delta) {
  if (delta == Usage{}) return false;
  auto key = ChangeKey::artifact(id).bytes();
  auto v = txn.get(dirty, key);
  if (!v || v->empty()) return false;
  Usage usage = decode("dirty", [&] { return codec::read_usage_value(*v); });
  usage += delta;
  txn.put(dirty, key, codec::usage_value(usage));
  return true;
}

Index::Change::Change(Change&& o) noexcept : index_(std::exchange(o.index_, nullptr)), keys_(std::move(o.keys_)) {}

Index::Change& Index::Change::operator=(Change&& o) noexcept {
  if (this != &o) {
    if (index_) index_->impl_->changes.end(keys_);
    index_ = std::exchange(o.index_, nullptr);
    keys_ = std::move(o.keys_);
  }
  return *this;
}

Index::Change::~Change() {
  if (index_) index_->impl_->changes.end(keys_);
}

void Index::Change::add(const std::vector<ChangeKey>& keys) {
  if (!index_) return;
  Change more = index_->begin_change(keys);
  keys_.insert(keys_.end(), more.keys_.begin(), more.keys_.end());
  more.index_ = nullptr;  // ours now
}

Index::Change Index::begin_change(const std::vector<ChangeKey>& keys) {
  auto& m = *impl_;
  std::vector<std::string> bytes;
  bytes.reserve(keys.size());
  for (const auto& k : keys) bytes.push_back(k.bytes());
  Change change;
  // Distrusted (until the next full walk or clean close): marks are useless.
  if (m.distrusted) return change;
  std::vector<std::string> claimed = m.changes.begin(bytes);
  change.index_ = this;
  change.keys_ = std::move(bytes);
  if (claimed.empty()) return change;  // the hot path: every row is committed
  try {
    // Committed (not synced): in the page cache before the change is made.
    m.write([&](lmdb::WriteTxn& txn) {
      for (const auto& k : claimed) {
        // A tombstone's value stays (the key still covers the removal).
        if (!txn.get(m.dirty, k)) txn.put(m.dirty, k, {});
      }
    });
  } catch (const std::exception& e) {
    m.changes.written(claimed, false);
    // Typically the store's filesystem is full (the index lives there too).
    // The change must not fail for that: say durably that the set is
    // incomplete (the flag file needs no space), and let it go ahead; a
    // crash before the next clean unmount then walks the whole tree.
    m.distrust_changes();  // throws (and the change is refused) only if that fails too
    spdlog::error("index {}: cannot record a change ({}): after a crash the next mount walks the whole tree",
                  m.env.dir().string(), e.what());
    return change;
  }
  m.changes.written(claimed, true);
  return change;
}

void Index::charge_together(const std::vector<std::pair<ArtifactId, Usage>>& artifacts, const Usage& total) {
  std::lock_guard lock(impl_->pending_mutex);
  for (const auto& [id, delta] : artifacts) {
    if (id == kOutside) {
      impl_->outside += delta;
    } else {
      impl_->pending[id].usage += delta;
    }
  }
  impl_->totals.usage += total;
  impl_->meta_dirty = true;
}

Index::ChangedSet Index::changed_set() const {
  auto& m = *impl_;
  ChangedSet out;
  out.usable = m.changes_usable;
  out.why_not = m.changes_why_not;
  auto txn = m.env.read();
  lmdb::Cursor cursor(txn, m.dirty);
  for (auto entry = cursor.first(); entry; entry = cursor.next()) {
    std::string_view key = entry->first;
    if (key.empty()) m.corrupt("table 'dirty' has an empty key");
    switch (key[0]) {
      case 'a': {
        ArtifactId id = m.decode("dirty", [&] { return codec::read_be64(key.substr(1)); });
        if (entry->second.empty()) {
          out.artifacts.push_back(id);
        } else {
          out.tombstones[id] = m.decode("dirty", [&] { return codec::read_usage_value(entry->second); });
        }
        break;
      }
      case 'o': out.outside = true; break;
      case 'l': out.links = true; break;
      case 'p': out.paths.emplace_back(key.substr(1)); break;
      default: m.corrupt("table 'dirty' has an unknown key");
    }
  }
  return out;
}

std::vector<std::string> Index::outside_tops() const {
  auto txn = impl_->env.read();
  std::vector<std::string> out;
  lmdb::Cursor cursor(txn, impl_->tops);
  for (auto entry = cursor.first(); entry; entry = cursor.next()) out.emplace_back(entry->first);
  return out;
}

void Index::replace_outside_tops(std::string_view path, const std::vector<std::string>& tops) {
  auto& m = *impl_;
  std::vector<std::string> wanted(tops);
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  {
    // Most calls (an artifact made or removed) change nothing: read first.
    auto txn = m.env.read();
    std::vector<std::string> have;
    lmdb::Cursor cursor(txn, m.tops);
    for (auto entry = cursor.seek(path); entry && under(entry->first, path); entry = cursor.next()) {
      have.emplace_back(entry->first);
    }
    if (have == wanted) return;
  }
  m.write([&](lmdb::WriteTxn& txn) {
    erase_tops(txn, m.tops, path);
    for (const auto& top : wanted) txn.put(m.tops, top, {});
  });
}

std::vector<std::pair<InodeNumber, LinkSet>> Index::links_naming(const std::vector<ArtifactId>& units) const {
  auto& m = *impl_;
  std::vector<ArtifactId> sorted(units);
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::pair<InodeNumber, LinkSet>> out;
  if (sorted.empty()) return out;
  auto txn = m.env.read();
  lmdb::Cursor cursor(txn, m.links);
  for (auto entry = cursor.first(); entry; entry = cursor.next()) {
    LinkSet set = m.decode("links", [&] { return codec::read_links_value(entry->second); });
    for (const auto& [id, n] : set) {
      if (std::binary_search(sorted.begin(), sorted.end(), id)) {
        out.emplace_back(m.decode("links", [&] { return codec::read_be64(entry->first); }), std::move(set));
        break;
      }
    }
  }
  return out;
}

void Index::commit_recovery(const Recovery& r) {
  auto& m = *impl_;
  std::lock_guard flush_lock(m.flush_mutex);
  std::uint64_t count = 0;
  m.write([&](lmdb::WriteTxn& txn) {
    // Removals first: their names may be taken by renames and additions.
    for (ArtifactId id : r.removed) {
      if (auto rec = m.load_record(txn, id)) m.erase_record(txn, *rec);
    }
    for (const auto& [id, found] : r.updated) {
      auto rec = m.load_record(txn, id);
      if (!rec) continue;
      if (rec->name != found.name) {
        m.check_name(found.name);
        if (m.lookup_name(txn, rec->name) == id) txn.del(m.names, rec->name);
        txn.put(m.names, found.name, codec::be64(id));
        rec->name = found.name;
      }
      rec->usage = found.usage;
      rec->root_ino = found.root_ino;
      m.put_record(txn, *rec);
    }
    auto next_id = m.meta_u64(txn, kMetaNextId);
    for (const auto& found : r.added) {
      m.check_name(found.name);
      if (auto stale = m.lookup_name(txn, found.name)) {
        if (auto rec = m.load_record(txn, *stale)) m.erase_record(txn, *rec);
      }
      ArtifactRecord rec{next_id++, found.name, found.usage, found.created, found.created, 0, false, found.root_ino};
      m.put_record(txn, rec);
      txn.put(m.names, rec.name, codec::be64(rec.id));
      txn.put(m.lru, codec::lru_key(rec.last_access, rec.id), {});
    }
    txn.put(m.meta, kMetaNextId, codec::u64_value(next_id));
    for (const auto& [ino, by_name] : r.links) {
      LinkSet set;
      for (const auto& [name, n] : by_name) {
        if (name.empty()) {
          set[kOutside] += n;
        } else if (auto id = m.lookup_name(txn, name)) {
          set[*id] += n;
        }
      }
      if (set.empty()) {
        txn.del(m.links, codec::be64(ino));
      } else {
        txn.put(m.links, codec::be64(ino), codec::links_value(set));
      }
    }
    for (const auto& top : r.tops_replaced) erase_tops(txn, m.tops, top);
    for (const auto& top : r.tops) txn.put(m.tops, top, {});
    txn.put(m.meta, kMetaTotals, codec::usage_value(r.total));
    txn.put(m.meta, kMetaOutside, codec::usage_value(r.outside));
    txn.clear(m.dirty);
    if (!m.inconsistent) txn.put(m.meta, kMetaChangesKept, codec::u64_value(1));
    count = txn.entries(m.artifacts);
  });
  m.trust_changes();
  {
    std::lock_guard lock(m.pending_mutex);
    m.totals.usage = r.total;
    m.totals.artifact_count = count;
    m.outside = r.outside;
    // Deltas charged before the walk are in what it measured (nothing is
    // charged before requests are served; this only keeps that true).
    for (auto& [id, p] : m.pending) p.usage = {};
  }
  m.changes.reset();
  m.unsynced = false;
  m.env.sync();
}

void Index::full_walk_done(const std::vector<std::string>& tops) {
  auto& m = *impl_;
  std::lock_guard flush_lock(m.flush_mutex);
  m.write([&](lmdb::WriteTxn& txn) {
    txn.clear(m.tops);
    for (const auto& top : tops) txn.put(m.tops, top, {});
    txn.put(m.meta, kMetaTopsReady, codec::u64_value(1));
    txn.clear(m.dirty);
    if (!m.inconsistent) txn.put(m.meta, kMetaChangesKept, codec::u64_value(1));
  });
  m.trust_changes();
  m.changes.reset();
  m.unsynced = false;
  m.env.sync();
}

// ===== end of CHANGED SET ==========================================================

}  // namespace artifactfs::index

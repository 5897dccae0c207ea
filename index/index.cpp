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
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <atomic>
#include <mutex>
#include <unordered_map>

#include "index/codec.hpp"
#include "index/index.hpp"
#include "index/lmdb.hpp"

namespace artifactfs::index {

namespace {

// Version 1: tables meta, artifacts, names, lru, links as below.
constexpr std::uint64_t kSchemaVersion = 1;
constexpr unsigned kMaxTables = 8;
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

struct Pending {
  TimeNs last_access = std::numeric_limits<TimeNs>::min();  // max of the recorded accesses
  std::uint64_t accesses = 0;
  Usage usage;

  void add(const Pending& o) {
    last_access = std::max(last_access, o.last_access);
    accesses += o.accesses;
    usage += o.usage;
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
      : env(dir, options.initial_map_size, kMaxTables), max_name(env.max_key_size()) {}

  mutable lmdb::Env env;  // reads through const methods begin transactions
  MDB_dbi meta = 0, artifacts = 0, names = 0, lru = 0, links = 0;
  bool previous_clean = true;
  std::atomic<bool> inconsistent{false};  // see mark_inconsistent()
  std::size_t max_name;

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
  // records reflect.
  void merge_locked(ArtifactRecord& rec, std::uint64_t snapshot) const {
    if (in_flight && (in_flight_txn == kNotCommitted || in_flight_txn > snapshot)) {
      if (auto it = in_flight->find(rec.id); it != in_flight->end()) it->second.apply_to(rec);
    }
    if (auto it = pending.find(rec.id); it != pending.end()) it->second.apply_to(rec);
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
      for (auto& rec : records) merge_locked(rec, snapshot);
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
  std::vector<ArtifactId> flush();

  class RebuildImpl;
};

// --- open / close --------------------------------------------------------------------

void Index::Impl::open_tables() {
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
  });
  env.sync();
}

std::unique_ptr<Index> Index::open(const std::filesystem::path& dir, const IndexOptions& options) {
  auto impl = std::make_unique<Impl>(dir, options);
  impl->open_tables();
  return std::unique_ptr<Index>(new Index(std::move(impl)));
}

Index::Index(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Index::~Index() {
  // Best effort: keeps what was recorded, but leaves the index marked not
  // clean unless close_clean() ran.
  try {
    std::lock_guard flush_lock(impl_->flush_mutex);
    impl_->flush();
  } catch (const std::exception& e) {
    spdlog::error("index {}: final flush failed: {}", impl_->env.dir().string(), e.what());
  }
}

bool Index::previous_shutdown_clean() const { return impl_->previous_clean; }

void Index::close_clean() {
  auto& m = *impl_;
  std::lock_guard flush_lock(m.flush_mutex);
  m.flush();  // Impl::flush does not take flush_mutex; we hold it
  if (m.inconsistent) {
    spdlog::warn("index {}: left marked for a re-walk of the data tree at the next mount", m.env.dir().string());
  } else {
    m.env.write([&](lmdb::WriteTxn& txn) { txn.put(m.meta, kMetaClean, codec::u64_value(1)); });
  }
  m.env.sync();
}

void Index::mark_inconsistent() { impl_->inconsistent = true; }

// --- reads ---------------------------------------------------------------------------

std::optional<ArtifactId> Index::find(std::string_view name) const {
  if (name.empty() || name.size() > impl_->max_name) return std::nullopt;
  auto txn = impl_->env.read();
  return impl_->lookup_name(txn, name);
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
                                                       std::optional<std::pair<TimeNs, ArtifactId>> after) const {
  auto& m = *impl_;
  if (limit == 0) return {};
  return m.read_merged([&](const lmdb::Txn& txn) {
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
      auto rec = m.load_record(txn, id);
      if (!rec) m.corrupt("lru names artifact " + std::to_string(id) + ", which has no record");
      if (rec->last_access != when) {
        m.corrupt("lru key of artifact " + std::to_string(id) + " does not match its last access");
      }
      out.push_back(std::move(*rec));
    }
    return out;
  });
}

void Index::for_each_with_prefix(std::string_view prefix,
                                 const std::function<void(const ArtifactRecord&)>& fn) const {
  auto& m = *impl_;
  // Chunked so that the callback runs with no transaction open (it may call
  // back into the index) and a huge walk does not pin one snapshot.
  std::string resume(prefix);
  bool skip_resume = false;
  for (;;) {
    auto records = m.read_merged([&](const lmdb::Txn& txn) {
      std::vector<ArtifactRecord> out;
      lmdb::Cursor cursor(txn, m.names);
      auto entry = cursor.seek(resume);
      if (entry && skip_resume && entry->first == resume) entry = cursor.next();
      for (; entry && starts_with(entry->first, prefix) && out.size() < kReadChunk; entry = cursor.next()) {
        auto id = m.decode("names", [&] { return codec::read_be64(entry->second); });
        auto rec = m.load_record(txn, id);
        if (!rec) m.corrupt("name '" + std::string(entry->first) + "' has no record");
        out.push_back(std::move(*rec));
      }
      return out;
    });
    for (const auto& rec : records) fn(rec);
    if (records.size() < kReadChunk) return;
    resume = records.back().name;
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
    if (m.lookup_name(txn, name)) throw IndexError("artifact name already in the index: " + std::string(name));
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
    if (m.lookup_name(txn, new_name)) {
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
    m.erase_record(txn, *removed);
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
    m.pending.erase(it);
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
std::vector<ArtifactId> Index::Impl::flush() {
  Batch batch;
  {
    std::unique_lock lock(pending_mutex);
    if (pending.empty() && !meta_dirty) {
      // Nothing to write: an idle flush thread must not touch the disk.
      lock.unlock();
      if (unsynced.exchange(false)) env.sync();
      return {};
    }
    batch.swap(pending);
    in_flight = &batch;
    in_flight_txn = kNotCommitted;
  }
  std::vector<ArtifactId> changed;
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
          for (const auto& [id, p] : batch) {
            auto rec = load_record(txn, id);
            if (!rec) continue;  // removed meanwhile: its changes go with it
            TimeNs before = rec->last_access;
            p.apply_to(*rec);
            if (rec->last_access != before) {
              txn.del(lru, codec::lru_key(before, id));
              txn.put(lru, codec::lru_key(rec->last_access, id), {});
              changed.push_back(id);
            }
            put_record(txn, *rec);
          }
          write_meta_from_memory(txn);
        },
        [&] {
          std::lock_guard lock(pending_mutex);
          in_flight_txn = kNotCommitted;
        });
  } catch (...) {
    // Nothing was applied: give the batch back so the next flush retries.
    std::lock_guard lock(pending_mutex);
    for (const auto& [id, p] : batch) pending[id].add(p);
    in_flight = nullptr;
    in_flight_txn = kNotCommitted;
    meta_dirty = true;
    throw;
  }
  {
    std::lock_guard lock(pending_mutex);
    in_flight = nullptr;
    in_flight_txn = kNotCommitted;
    last_cleared_txn = committed;
  }
  unsynced = false;
  env.sync();
  std::sort(changed.begin(), changed.end());
  return changed;
}

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

std::unique_ptr<Index::Rebuild> Index::begin_rebuild() { return std::make_unique<Impl::RebuildImpl>(*impl_); }

}  // namespace artifactfs::index

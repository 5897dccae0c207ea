// Thin RAII layer over the LMDB C API, private to the index library.
//
// CONCURRENCY MODEL
// An Env is shared by every thread. Transactions are created with MDB_NOTLS,
// so a read transaction may live on any thread, but one transaction object
// is used by one thread at a time. Every transaction holds `resize_mutex_`
// shared for its whole life; growing the map takes it exclusively, because
// mdb_env_set_mapsize requires that this process has no transaction open.
// Consequences for callers: never begin a transaction while the same thread
// holds another one, and never call back into user code while a transaction
// is open (user code might begin one).
// Env::write() also holds `write_mutex_` across all attempts of one write,
// so that in this process no other write can commit between a failed
// attempt and its `on_abort` (LMDB serialises writers anyway; this costs no
// concurrency).
// Lock order: write_mutex_, then resize_mutex_, then any lock of the index;
// LMDB's own writer lock is taken inside mdb_txn_begin, after resize_mutex_.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

#include "index/index.hpp"

namespace artifactfs::index::lmdb {

// The map is full; Env::write() grows it and retries. Never leaves Env.
class MapFull : public IndexError {
 public:
  using IndexError::IndexError;
};

// Throws IndexCorrupt for return codes that mean "these files cannot be
// trusted", MapFull for MDB_MAP_FULL and IndexError for everything else.
// `what` names the operation, `file` the file it concerns.
[[noreturn]] void throw_error(int rc, std::string_view what, const std::filesystem::path& file);

inline MDB_val to_val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view to_view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

class Env;

// What both transaction kinds can do. Not constructible on its own.
class Txn {
 public:
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn();

  // "No such key" is an answer, not an error. The view points into the map
  // and is valid only until the transaction ends or the key is written.
  std::optional<std::string_view> get(MDB_dbi dbi, std::string_view key) const;
  std::uint64_t entries(MDB_dbi dbi) const;
  MDB_txn* handle() const { return txn_; }
  // The LMDB transaction id: for a read transaction the id of the newest
  // commit it sees; for a write transaction the id its commit will have.
  std::uint64_t id() const { return mdb_txn_id(txn_); }
  Env& env() const { return *env_; }

 protected:
  Txn(Env& env, unsigned flags);
  Txn(Txn&& o) noexcept;
  void abort() noexcept;

  Env* env_;
  std::shared_lock<std::shared_mutex> resize_lock_;
  MDB_txn* txn_ = nullptr;
};

class ReadTxn : public Txn {
 public:
  explicit ReadTxn(Env& env) : Txn(env, MDB_RDONLY) {}
  ReadTxn(ReadTxn&&) noexcept = default;
};

class WriteTxn : public Txn {
 public:
  explicit WriteTxn(Env& env) : Txn(env, 0) {}
  WriteTxn(WriteTxn&&) noexcept = default;

  void put(MDB_dbi dbi, std::string_view key, std::string_view value);
  // Returns whether the key existed.
  bool del(MDB_dbi dbi, std::string_view key);
  // Removes every key of the table (the table itself stays).
  void clear(MDB_dbi dbi);
  // Opens a named table (nullptr: the main table); with create == false a
  // missing table is nullopt.
  std::optional<MDB_dbi> open_dbi(const char* name, bool create);
  void commit();
};

// A cursor over one table, owned by (and not outliving) a transaction.
class Cursor {
 public:
  Cursor(const Txn& txn, MDB_dbi dbi);
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  using Entry = std::pair<std::string_view, std::string_view>;
  // First entry with key >= `key`.
  std::optional<Entry> seek(std::string_view key);
  std::optional<Entry> first();
  std::optional<Entry> next();
  // Deletes the entry under the cursor (write transactions only).
  void del();

 private:
  std::optional<Entry> get(MDB_val* key, MDB_cursor_op op);
  const Txn& txn_;
  MDB_cursor* cursor_ = nullptr;
};

class Env {
 public:
  // Opens (creating the directory if needed) with MDB_NOSYNC | MDB_NOTLS.
  // `read_only`: MDB_RDONLY, the directory must exist, nothing is written
  // but the reader table in lock.mdb (for an inspection while no daemon runs).
  Env(const std::filesystem::path& dir, std::uint64_t initial_map_size, unsigned max_dbs, bool read_only = false);
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  ReadTxn read() { return ReadTxn(*this); }

  // Runs `fn(txn)` in a write transaction and commits it. When the map is
  // full the transaction is aborted, the map doubled and `fn` run again from
  // scratch, so `fn` must not change anything outside the transaction except
  // through `on_abort`, which runs after every failed attempt (including a
  // failed commit), before any other write of this process can begin.
  template <typename Fn>
  void write(Fn&& fn, const std::function<void()>& on_abort = {}) {
    std::lock_guard write_lock(write_mutex_);
    for (;;) {
      std::uint64_t size_seen = 0;
      try {
        WriteTxn txn(*this);
        size_seen = map_size_locked();
        fn(txn);
        txn.commit();
        return;
      } catch (const MapFull&) {
        if (on_abort) on_abort();
      } catch (...) {
        if (on_abort) on_abort();
        throw;
      }
      grow(size_seen);
    }
  }

  // Opens a table that must already exist, in a read-only transaction (for a
  // read-only environment, where no write transaction can open it);
  // nullopt if there is no such table.
  std::optional<MDB_dbi> open_existing_table(const char* name);

  // Writes the buffers to disk (fdatasync); the environment is MDB_NOSYNC.
  void sync();
  // --- memory (eviction at scale) ---
  // Drops this process's page-table entries for the map (MADV_DONTNEED).
  // Every page read through the map stays resident in the process (RssFile)
  // until the map is remapped, so a rebuild or an eviction run that read
  // the whole file leaves the daemon's resident set as large as the index.
  // The map is a shared read-only file mapping (no MDB_WRITEMAP): the pages
  // stay in the page cache and the next access is a minor fault; pointers
  // of open transactions stay valid. Holds resize_mutex_ shared.
  void release_mapped_pages();
  std::uint64_t map_size() const;
  std::size_t max_key_size() const;
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path data_file() const { return dir_ / "data.mdb"; }
  bool read_only() const { return read_only_; }

 private:
  friend class Txn;
  // The map size, for a caller that already holds resize_mutex_.
  std::uint64_t map_size_locked() const;
  // Doubles the map unless another thread already grew it past `size_seen`.
  void grow(std::uint64_t size_seen);
  // Another process grew the map: adopt its size.
  void adopt_new_size();

  std::filesystem::path dir_;
  bool read_only_ = false;
  MDB_env* env_ = nullptr;
  std::mutex write_mutex_;
  mutable std::shared_mutex resize_mutex_;
};

}  // namespace artifactfs::index::lmdb

// See lmdb.hpp for the concurrency model (resize_mutex_ shared per
// transaction, exclusive to grow the map).
#include "index/lmdb.hpp"

#include <spdlog/spdlog.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

namespace artifactfs::index::lmdb {

namespace {

bool means_corrupt(int rc) {
  switch (rc) {
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
      return true;
    default:
      return false;
  }
}

}  // namespace

void throw_error(int rc, std::string_view what, const std::filesystem::path& file) {
  std::string msg = file.string() + ": " + std::string(what) + ": " + mdb_strerror(rc);
  if (rc == MDB_MAP_FULL) throw MapFull(msg);
  if (means_corrupt(rc)) throw IndexCorrupt(msg + " (not a usable artifactfs index)");
  throw IndexError(msg);
}

// --- Txn ---------------------------------------------------------------------

Txn::Txn(Env& env, unsigned flags) : env_(&env) {
  for (;;) {
    resize_lock_ = std::shared_lock(env.resize_mutex_);
    int rc = mdb_txn_begin(env.env_, nullptr, flags, &txn_);
    if (rc == 0) return;
    txn_ = nullptr;
    resize_lock_.unlock();
    // Another process grew the map; adopting its size needs the exclusive
    // lock, so it happens with no transaction of ours open.
    if (rc != MDB_MAP_RESIZED) throw_error(rc, "begin transaction", env.data_file());
    env.adopt_new_size();
  }
}

Txn::Txn(Txn&& o) noexcept
    : env_(o.env_), resize_lock_(std::move(o.resize_lock_)), txn_(std::exchange(o.txn_, nullptr)) {}

Txn::~Txn() { abort(); }

void Txn::abort() noexcept {
  if (txn_) mdb_txn_abort(std::exchange(txn_, nullptr));
  if (resize_lock_.owns_lock()) resize_lock_.unlock();
}

std::optional<std::string_view> Txn::get(MDB_dbi dbi, std::string_view key) const {
  MDB_val k = to_val(key);
  MDB_val v{};
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) throw_error(rc, "get", env_->data_file());
  return to_view(v);
}

std::uint64_t Txn::entries(MDB_dbi dbi) const {
  MDB_stat st{};
  int rc = mdb_stat(txn_, dbi, &st);
  if (rc != 0) throw_error(rc, "stat", env_->data_file());
  return st.ms_entries;
}

// --- WriteTxn ------------------------------------------------------------------

void WriteTxn::put(MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  int rc = mdb_put(txn_, dbi, &k, &v, 0);
  if (rc != 0) throw_error(rc, "put", env_->data_file());
}

bool WriteTxn::del(MDB_dbi dbi, std::string_view key) {
  MDB_val k = to_val(key);
  int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != 0) throw_error(rc, "delete", env_->data_file());
  return true;
}

void WriteTxn::clear(MDB_dbi dbi) {
  int rc = mdb_drop(txn_, dbi, 0);
  if (rc != 0) throw_error(rc, "clear table", env_->data_file());
}

std::optional<MDB_dbi> WriteTxn::open_dbi(const char* name, bool create) {
  MDB_dbi dbi = 0;
  int rc = mdb_dbi_open(txn_, name, create ? MDB_CREATE : 0, &dbi);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) throw_error(rc, std::string("open table '") + (name ? name : "(main)") + "'", env_->data_file());
  return dbi;
}

void WriteTxn::commit() {
  // The handle is cleared first: whatever mdb_txn_commit returns, the
  // transaction is gone and the destructor must not abort it again.
  MDB_txn* txn = std::exchange(txn_, nullptr);
  int rc = mdb_txn_commit(txn);
  resize_lock_.unlock();
  if (rc != 0) throw_error(rc, "commit", env_->data_file());
}

// --- Cursor --------------------------------------------------------------------

Cursor::Cursor(const Txn& txn, MDB_dbi dbi) : txn_(txn) {
  int rc = mdb_cursor_open(txn.handle(), dbi, &cursor_);
  if (rc != 0) throw_error(rc, "open cursor", txn.env().data_file());
}

Cursor::~Cursor() {
  if (cursor_) mdb_cursor_close(cursor_);
}

std::optional<Cursor::Entry> Cursor::get(MDB_val* key, MDB_cursor_op op) {
  MDB_val k = key ? *key : MDB_val{};
  MDB_val v{};
  int rc = mdb_cursor_get(cursor_, &k, &v, op);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) throw_error(rc, "cursor", txn_.env().data_file());
  return Entry{to_view(k), to_view(v)};
}

std::optional<Cursor::Entry> Cursor::seek(std::string_view key) {
  if (key.empty()) return first();  // LMDB rejects empty keys, even to seek
  MDB_val k = to_val(key);
  return get(&k, MDB_SET_RANGE);
}

std::optional<Cursor::Entry> Cursor::first() { return get(nullptr, MDB_FIRST); }

std::optional<Cursor::Entry> Cursor::next() { return get(nullptr, MDB_NEXT); }

void Cursor::del() {
  int rc = mdb_cursor_del(cursor_, 0);
  if (rc != 0) throw_error(rc, "cursor delete", txn_.env().data_file());
}

// --- Env -----------------------------------------------------------------------

Env::Env(const std::filesystem::path& dir, std::uint64_t initial_map_size, unsigned max_dbs, bool read_only)
    : dir_(dir), read_only_(read_only) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec)) {
    throw IndexError(dir.string() + ": not a directory");
  }
  if (read_only && !std::filesystem::exists(dir / "data.mdb", ec)) {
    throw IndexError(data_file().string() + ": no index here (" +
                     (ec ? ec.message() : std::string("the store was never mounted")) + ")");
  }
  // Private to the daemon whatever its umask: 0700, files 0600.
  if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
  if (!read_only && !ec && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    ec.assign(errno, std::generic_category());
  }
  if (ec) throw IndexError(dir.string() + ": cannot create index directory: " + ec.message());

  int rc = mdb_env_create(&env_);
  if (rc != 0) throw_error(rc, "create environment", data_file());
  auto fail = [&](int code, std::string_view what) {
    mdb_env_close(std::exchange(env_, nullptr));
    throw_error(code, what, data_file());
  };
  if ((rc = mdb_env_set_mapsize(env_, initial_map_size)) != 0) fail(rc, "set map size");
  if ((rc = mdb_env_set_maxdbs(env_, max_dbs)) != 0) fail(rc, "set max tables");
  // MDB_NOTLS takes one reader slot per open read transaction, not per
  // thread; leave room for many FUSE worker threads.
  if ((rc = mdb_env_set_maxreaders(env_, 1024)) != 0) fail(rc, "set max readers");
  // NOSYNC: flush() decides when data reaches the disk. NOTLS: read
  // transactions are not tied to the thread that began them.
  const unsigned flags = MDB_NOSYNC | MDB_NOTLS | (read_only ? MDB_RDONLY : 0u);
  if ((rc = mdb_env_open(env_, dir.c_str(), flags, 0600)) != 0) fail(rc, "open");
  // A killed previous owner leaves its reader slots behind; they would pin
  // old pages and make the file grow.
  int stale = 0;
  if ((rc = mdb_reader_check(env_, &stale)) != 0) fail(rc, "check readers");
  if (stale > 0) spdlog::info("index {}: cleared {} stale reader slots", dir.string(), stale);
}

std::optional<MDB_dbi> Env::open_existing_table(const char* name) {
  std::shared_lock lock(resize_mutex_);
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  if (rc != 0) throw_error(rc, "begin transaction", data_file());
  MDB_dbi dbi = 0;
  rc = mdb_dbi_open(txn, name, 0, &dbi);
  if (rc == MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return std::nullopt;
  }
  if (rc != 0) {
    mdb_txn_abort(txn);
    throw_error(rc, std::string("open table '") + name + "'", data_file());
  }
  // Committing the read transaction makes the handle usable by later ones.
  rc = mdb_txn_commit(txn);
  if (rc != 0) throw_error(rc, "commit", data_file());
  return dbi;
}

Env::~Env() {
  if (env_) mdb_env_close(env_);
}

void Env::sync() {
  std::shared_lock lock(resize_mutex_);
  int rc = mdb_env_sync(env_, 1);
  if (rc != 0) throw_error(rc, "sync", data_file());
}

void Env::release_mapped_pages() {
  // LMDB does not tell where its map is (mdb_env_info's me_mapaddr is only
  // set for MDB_FIXEDMAP): find the mappings of the data file, by device and
  // inode, in /proc/self/maps. Under resize_mutex_, so no remap moves them.
  std::shared_lock lock(resize_mutex_);
  mdb_filehandle_t fd;
  struct stat st;
  if (mdb_env_get_fd(env_, &fd) != 0 || fstat(fd, &st) != 0) return;
  std::FILE* maps = std::fopen("/proc/self/maps", "re");
  if (!maps) return;
  char line[512];
  while (std::fgets(line, sizeof line, maps)) {
    unsigned long start = 0, end = 0, inode = 0;
    unsigned dev_major = 0, dev_minor = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*x %x:%x %lu", &start, &end, &dev_major, &dev_minor, &inode) != 5) continue;
    if (inode != st.st_ino || dev_major != major(st.st_dev) || dev_minor != minor(st.st_dev) || end <= start) continue;
    if (madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED) != 0) {
      spdlog::debug("index {}: madvise(MADV_DONTNEED) of the map failed: {}", dir_.string(), std::strerror(errno));
    }
  }
  std::fclose(maps);
}

std::uint64_t Env::map_size_locked() const {
  MDB_envinfo info{};
  mdb_env_info(env_, &info);
  return info.me_mapsize;
}

std::uint64_t Env::map_size() const {
  std::shared_lock lock(resize_mutex_);
  return map_size_locked();
}

std::size_t Env::max_key_size() const { return static_cast<std::size_t>(mdb_env_get_maxkeysize(env_)); }

void Env::grow(std::uint64_t size_seen) {
  std::unique_lock lock(resize_mutex_);
  std::uint64_t current = map_size_locked();
  if (current > size_seen) return;  // another thread grew it meanwhile
  std::uint64_t next = current * 2;
  int rc = mdb_env_set_mapsize(env_, next);
  if (rc != 0) throw_error(rc, "grow map", data_file());
  spdlog::info("index {}: map grown from {} to {} bytes", dir_.string(), current, next);
}

void Env::adopt_new_size() {
  std::unique_lock lock(resize_mutex_);
  int rc = mdb_env_set_mapsize(env_, 0);
  if (rc != 0) throw_error(rc, "adopt map size", data_file());
}

}  // namespace artifactfs::index::lmdb

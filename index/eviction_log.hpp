// The eviction log's table, private to the index library: one row per
// eviction, key = the eviction time (as lru keys: shifted, big-endian) then
// the artifact id, so that the table is in time order and bounded by
// dropping from its front. The Index (index.cpp) queues entries in memory and
// writes them in the transaction that commits the evictions' removals.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <vector>

#include "index/index.hpp"
#include "index/lmdb.hpp"

namespace artifactfs::index::eviction_log {

// Appends `entries` and drops the oldest rows beyond `limit`; the newest
// time dropped is kept in `meta` (see dropped_until).
void append(lmdb::WriteTxn& txn, MDB_dbi log, MDB_dbi meta, const std::vector<EvictionEntry>& entries,
            std::size_t limit);

// Rows with when >= since, oldest first.
std::vector<EvictionEntry> read(const lmdb::Txn& txn, MDB_dbi log, TimeNs since);

// The newest eviction time the log no longer holds (0: nothing dropped).
TimeNs dropped_until(const lmdb::Txn& txn, MDB_dbi meta);

}  // namespace artifactfs::index::eviction_log

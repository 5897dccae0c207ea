#include "index/eviction_log.hpp"

#include <array>
#include <string>

#include "index/codec.hpp"

namespace artifactfs::index {

namespace {

constexpr std::array<std::pair<EvictionReason, std::string_view>, 4> kReasonNames = {{
    {EvictionReason::quota, "quota"},
    {EvictionReason::make_room, "make-room"},
    {EvictionReason::manual_evict, "evict"},
    {EvictionReason::manual_cleanup, "cleanup"},
}};

constexpr std::string_view kMetaDroppedUntil = "eviction_log_dropped_until";

}  // namespace

std::string_view reason_name(EvictionReason reason) {
  for (const auto& [r, name] : kReasonNames) {
    if (r == reason) return name;
  }
  return "unknown";
}

std::optional<EvictionReason> reason_from_name(std::string_view name) {
  for (const auto& [r, n] : kReasonNames) {
    if (n == name) return r;
  }
  return std::nullopt;
}

namespace eviction_log {

void append(lmdb::WriteTxn& txn, MDB_dbi log, MDB_dbi meta, const std::vector<EvictionEntry>& entries,
            std::size_t limit) {
  if (entries.empty()) return;
  for (const auto& e : entries) txn.put(log, codec::lru_key(e.when, e.id), codec::eviction_value(e));
  std::uint64_t count = txn.entries(log);
  if (count <= limit) return;
  TimeNs newest_dropped = 0;
  lmdb::Cursor cursor(txn, log);
  for (auto entry = cursor.first(); entry && count > limit; entry = cursor.first(), --count) {
    newest_dropped = codec::read_lru_key(entry->first).first;
    cursor.del();
  }
  txn.put(meta, kMetaDroppedUntil, codec::u64_value(static_cast<std::uint64_t>(newest_dropped)));
}

std::vector<EvictionEntry> read(const lmdb::Txn& txn, MDB_dbi log, TimeNs since) {
  std::vector<EvictionEntry> out;
  lmdb::Cursor cursor(txn, log);
  for (auto entry = cursor.seek(codec::lru_key(since, 0)); entry; entry = cursor.next()) {
    auto [when, id] = codec::read_lru_key(entry->first);
    out.push_back(codec::read_eviction_value(when, id, entry->second));
  }
  return out;
}

TimeNs dropped_until(const lmdb::Txn& txn, MDB_dbi meta) {
  auto v = txn.get(meta, kMetaDroppedUntil);
  return v ? static_cast<TimeNs>(codec::read_u64_value(*v)) : 0;
}

}  // namespace eviction_log
}  // namespace artifactfs::index

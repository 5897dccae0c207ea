// See node_table.hpp.
#include "index/node_table.hpp"

#include <spdlog/spdlog.h>

#include <utility>

#include "index/codec.hpp"
#include "index/lmdb.hpp"

namespace artifactfs::index {

namespace {
constexpr std::uint64_t kInitialMapSize = 16ull << 20;  // grown on demand

// A pending change: a new place, or a removal (nullopt).
using Change = std::optional<NodePlace>;
using Batch = std::unordered_map<InodeNumber, Change>;
}  // namespace

struct NodeTable::Impl {
  explicit Impl(const std::filesystem::path& dir) : env(dir, kInitialMapSize, 2) {
    env.write([&](lmdb::WriteTxn& txn) { nodes = *txn.open_dbi("nodes", true); });
    env.sync();
  }
  mutable lmdb::Env env;  // reads through const methods begin transactions
  MDB_dbi nodes = 0;
  std::mutex flush_mutex;
  mutable std::mutex mutex;
  Batch pending;
  Batch in_flight;  // being written by flush(); still visible to find()
  std::uint64_t batches_committed = 0;  // under `mutex`: moves when in_flight is cleared after a commit

  std::optional<NodePlace> stored(InodeNumber ino) const {
    auto txn = env.read();
    auto value = txn.get(nodes, codec::be64(ino));
    if (!value) return std::nullopt;
    return codec::read_node_value(*value);
  }
};

NodeTable::NodeTable(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NodeTable::~NodeTable() {
  try {
    flush();
  } catch (const std::exception& e) {
    spdlog::error("node table: final flush failed: {}", e.what());
  }
}

std::unique_ptr<NodeTable> NodeTable::open(const std::filesystem::path& dir) {
  return std::unique_ptr<NodeTable>(new NodeTable(std::make_unique<Impl>(dir)));
}

void NodeTable::placed(InodeNumber ino, NodePlace place) {
  if (find(ino) == place) return;
  std::lock_guard lock(impl_->mutex);
  impl_->pending[ino] = std::move(place);
}

void NodeTable::removed(InodeNumber ino) {
  std::lock_guard lock(impl_->mutex);
  impl_->pending[ino] = std::nullopt;
}

std::optional<NodePlace> NodeTable::find(InodeNumber ino) const {
  auto& m = *impl_;
  for (;;) {
    std::uint64_t committed;
    {
      std::lock_guard lock(m.mutex);
      if (auto it = m.pending.find(ino); it != m.pending.end()) return it->second;
      if (auto it = m.in_flight.find(ino); it != m.in_flight.end()) return it->second;
      committed = m.batches_committed;
    }
    // LMDB after the batches: if a batch in flight was committed and cleared
    // while this read's snapshot was older, the count moved and the read is
    // made again, so a place is never missed.
    auto stored = m.stored(ino);
    std::lock_guard lock(m.mutex);
    if (auto it = m.pending.find(ino); it != m.pending.end()) return it->second;
    if (auto it = m.in_flight.find(ino); it != m.in_flight.end()) return it->second;
    if (m.batches_committed == committed) return stored;
  }
}

void NodeTable::flush() {
  auto& m = *impl_;
  std::lock_guard flush_lock(m.flush_mutex);
  {
    std::lock_guard lock(m.mutex);
    if (m.pending.empty()) return;
    m.in_flight.swap(m.pending);
  }
  try {
    m.env.write([&](lmdb::WriteTxn& txn) {
      for (const auto& [ino, change] : m.in_flight) {
        if (change) txn.put(m.nodes, codec::be64(ino), codec::node_value(*change));
        else txn.del(m.nodes, codec::be64(ino));
      }
    });
  } catch (...) {
    // Give the batch back (newer pending changes win) for the next flush.
    std::lock_guard lock(m.mutex);
    for (auto& [ino, change] : m.in_flight) m.pending.try_emplace(ino, std::move(change));
    m.in_flight.clear();
    throw;
  }
  m.env.sync();
  std::lock_guard lock(m.mutex);
  m.in_flight.clear();
  ++m.batches_committed;
}

std::uint64_t NodeTable::size() const {
  auto txn = impl_->env.read();
  return txn.entries(impl_->nodes);
}

}  // namespace artifactfs::index

// Where every inode the daemon handed to the kernel lives: backing inode
// number -> (parent inode number, name, backing file handle). It lets the
// daemon resolve a node id it handed out earlier after the kernel forgot
// the inode and after a restart (an NFS server re-resolving its clients'
// file handles asks for exactly that: LOOKUP of "." in the node), without
// keeping anything in memory for inodes the kernel does not hold.
//
// It lives in its own LMDB environment (STORE/index/nodes) beside the
// artifact index, so that its writes never wait on, or hold up, the
// index's; like the index it is written in batches by the flush thread,
// never on the open path. A crash loses at most one flush interval of
// places: a handle to an inode created in that interval answers ESTALE.
//
// CONCURRENCY MODEL
// Every method may be called from any thread. `mutex_` guards the pending
// batch; it is held for map operations only, never across LMDB calls.
// find() checks the batches, reads LMDB without the lock, then checks the
// batches again (which win); if a flush committed and dropped a batch in
// between (a count under the lock says so), the LMDB read may predate it and
// is made again. flush() swaps the batch out under the lock and writes it in
// one transaction; a batch in flight is kept visible to find() until it is
// committed. Lock order: flush_mutex_, then the LMDB
// wrapper's locks, then mutex_.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "index/index.hpp"

namespace artifactfs::index {

struct NodePlace {
  InodeNumber parent = 0;
  std::string name;
  std::string handle;  // the backing file handle: type (4 bytes, little-endian) then its bytes; may be empty
  bool operator==(const NodePlace&) const = default;
};

class NodeTable {
 public:
  // Opens or creates the table in `dir`. Throws IndexCorrupt / IndexError.
  static std::unique_ptr<NodeTable> open(const std::filesystem::path& dir);
  ~NodeTable();
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;

  // Memory only: applied by the next flush(). A place equal to the stored
  // one costs one read and writes nothing.
  void placed(InodeNumber ino, NodePlace place);
  void removed(InodeNumber ino);
  // The stored place merged with what is pending.
  std::optional<NodePlace> find(InodeNumber ino) const;
  // Writes the pending batch in one transaction and syncs.
  void flush();
  std::uint64_t size() const;  // stored entries (for tests and statistics)

 private:
  struct Impl;
  explicit NodeTable(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace artifactfs::index

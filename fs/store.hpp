// The store directory: its layout on disk, the lock that allows one daemon
// per store, and the checks of the mountpoint.
//
//   STORE/data     the data tree, what the mount shows
//   STORE/index/   the LMDB index (data.mdb, lock.mdb)
//   STORE/trash/   evicted artifacts waiting to be deleted
//   STORE/evicting/ evictions of artifacts of several entries, being staged
//   STORE/lock     "PID MOUNTPOINT" of the daemon holding the store (flock)
//   STORE/layout   the layout the index was built for
#pragma once

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include "config/config.hpp"

namespace artifactfs::fs {

// A problem the user can fix; what() says what was wrong and how to fix it.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Store {
 public:
  // Creates the store if needed and takes its lock. Throws UserError.
  explicit Store(std::filesystem::path root);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path data_dir() const { return root_ / "data"; }
  std::filesystem::path index_dir() const { return root_ / "index"; }
  std::filesystem::path trash_dir() const { return root_ / "trash"; }
  // Evictions of artifacts of several entries being staged (group_eviction.hpp).
  std::filesystem::path evicting_dir() const { return root_ / "evicting"; }

  // Records the daemon's pid and mountpoint in the lock file (after
  // daemonizing, when the pid is final).
  void record_owner(const std::filesystem::path& mountpoint);
  // Whether the layout differs from the one the index was built for; the
  // first mount records it.
  bool layout_changed(const config::Layout& layout) const;
  void record_layout(const config::Layout& layout);
  // Moves a broken index aside (never deletes it) and returns where it went.
  std::filesystem::path set_index_aside();

 private:
  std::filesystem::path root_;
  int lock_fd_ = -1;
};

// The layout recorded in STORE/layout by the last mount; nullopt if none
// (never mounted) or unreadable.
std::optional<config::Layout> recorded_layout(const std::filesystem::path& store);

// Checks the mountpoint; clears a dead FUSE mount left by a crashed daemon
// ("Transport endpoint is not connected") with a lazy unmount. Throws
// UserError naming the problem and what to run.
void prepare_mountpoint(const std::filesystem::path& mountpoint, const std::filesystem::path& store);

}  // namespace artifactfs::fs

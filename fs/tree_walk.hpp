// Walks of a backing tree: the subtree walks of renames and adoptions, the
// reconcile walk and the trash deleter all use walk_tree/walk_below.
//
// A walk is single-threaded and shares no state with anything else: each
// call owns its stack of frames and descriptors. It runs with the daemon's
// rights; callers only walk the private store (data tree or trash), which
// no one else changes while the daemon holds it.
//
// It cannot follow a symlink, so it cannot leave the tree: a directory is
// only ever opened by its name in its (open) parent with O_NOFOLLOW |
// O_DIRECTORY, and only used if fstat shows the inode the entry's lstat
// showed; no path is ever built and passed to a syscall.
//
// It is iterative and bounded in descriptors whatever the depth: each frame
// reads its directory's listing into memory at once (so visitors may delete
// entries, and no directory stream stays open), and only the last
// kOpenLevels levels of the current path keep a descriptor. A shallower
// level is re-opened through ".." on the way back up and checked against the
// inode it was; if the tree moved under the walk, the walk stops (with a
// warning) rather than act on a wrong directory.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace artifactfs::fs {

// Levels of the current path whose directory descriptors stay open.
inline constexpr std::size_t kOpenLevels = 64;

// One entry, valid only during the callback.
struct WalkEntry {
  int parent_fd;            // the open directory holding the entry
  const std::string& name;  // its name there (never contains '/')
  const std::string& rel;   // path below the walk's level 0 ("" for the top of walk_tree)
  int depth;                // 0: the top of walk_tree; 1: its children (or those of walk_below's directory)
  const struct stat& st;    // its lstat
};

// Pre-order, for every entry; for a directory, returns whether to walk into it.
using WalkVisit = std::function<bool(const WalkEntry&)>;
// Post-order, for every directory walked into, after its children and with
// its own descriptor closed (so it may be removed from parent_fd).
using WalkLeave = std::function<void(const WalkEntry&)>;

// Walks the entry `name` of `dirfd` (a directory is walked into only if
// `visit` says so) and everything below it. Returns false if the walk
// stopped early because the tree changed under it (logged). A missing entry
// is an empty walk; an entry that cannot be listed or opened is logged and
// passed over.
bool walk_tree(int dirfd, const std::string& name, const WalkVisit& visit, const WalkLeave& leave = {});
// Walks everything below the directory open as `dirfd` (any kind of
// descriptor; its offset is not used). Children are at depth 1. Also false
// if it cannot be opened.
bool walk_below(int dirfd, const WalkVisit& visit, const WalkLeave& leave = {});

// One entry of a walked subtree: its path relative to the subtree's top
// ("" for the top itself), cut after kMaxRelComponents components, and its
// lstat. Entries deeper than that share their ancestor's `rel`.
inline constexpr int kMaxRelComponents = 8;  // the deepest layout.depth
struct SubtreeEntry {
  std::string rel;
  struct stat st;
};
// The entry `name` of `dirfd` and everything below it, in pre-order.
std::vector<SubtreeEntry> walk_subtree(int dirfd, const std::string& name);

}  // namespace artifactfs::fs

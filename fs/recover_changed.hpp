// Crash recovery proportional to what changed: after a kill -9, re-walk only
// the artifacts and namespaces of the index's changed set (CHANGED SET in
// index/index.hpp) instead of the whole data tree (fs/reconcile.hpp).
//
// Also the helpers the file system uses to keep the index's "outside tops"
// (every non-artifact entry at namespace level) as the tree changes, so that
// a recovery re-measures the outside usage without listing namespaces full
// of artifacts.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "index/index.hpp"

namespace artifactfs::fs {

// What a path below the data root is in the layout, from its components
// alone: a namespace (above the artifact depth), a kept entry or something
// inside one, an artifact root or something inside one. `top` is the kept
// entry or artifact root the path is or lies in ("" for a namespace).
enum class PathKind { namespace_, kept, in_kept, artifact_root, in_artifact };
struct PathClass {
  PathKind kind;
  std::string top;
};
PathClass classify_path(const config::Layout& layout, std::string_view path);

// An artifact root found by outside_tops_at below a namespace.
struct FoundRoot {
  std::string path;
  ino_t ino;
  index::TimeNs created;
};

// The outside tops at and below `path` as the tree is now: `path` itself if
// it is a namespace-level entry that belongs to no artifact, and for a
// namespace directory everything of that kind below it (walked with
// fs/tree_walk, never into artifacts or kept entries). With `roots`, also
// the artifact roots found below. "" is the data root (not itself a top).
// Empty if the path does not exist.
std::vector<std::string> outside_tops_at(int data_fd, const config::Layout& layout, const std::string& path,
                                         std::vector<FoundRoot>* roots = nullptr, std::uint64_t* entries = nullptr);

struct RecoverySummary {
  bool done = false;
  std::string why_not;            // when not done: why the whole tree must be walked
  std::uint64_t artifacts = 0;    // artifacts re-walked
  std::uint64_t namespaces = 0;   // namespace-level entries re-listed
  std::uint64_t outside_tops = 0; // outside entries re-measured (0: outside usage unchanged)
  std::uint64_t entries = 0;      // entries lstat'ed
  double seconds = 0;
};

// After an unclean shutdown: if the index's changed set can be trusted,
// re-walks what it names, commits the result (index equal to the tree, as
// a full reconcile would make it) and returns done = true, with a line on
// stderr saying what was re-walked. Otherwise changes nothing and returns
// why; the caller then walks the whole tree (reconcile()). Run it before
// requests are served.
RecoverySummary recover_changed(int data_fd, const config::Layout& layout, index::Index& index);

}  // namespace artifactfs::fs

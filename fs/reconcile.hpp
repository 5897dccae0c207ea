// Rebuilds the index's accounting from the data tree: after a crash, after
// --rebuild-index, or when the layout changed. Never on a clean remount.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "config/config.hpp"
#include "index/index.hpp"

namespace artifactfs::fs {

struct ReconcileSummary {
  std::uint64_t entries = 0;
  std::uint64_t artifacts = 0;
  index::Usage total;
  double seconds = 0;
};

// Walks the tree below data_fd once (progress on stderr) and replaces the
// index's usage records, totals and link table with what it found; access
// times and pins of artifacts that still exist are kept.
// `reason` is shown to the user.
ReconcileSummary reconcile(int data_fd, const config::Layout& layout, index::Index& index, const std::string& reason);

// The same walk, reporting what it finds to `sink` (whose commit() it does
// not call) and its progress (entries and artifacts so far, about once a
// second) to `progress`: for a check that changes nothing (`artifactfs fsck`).
// Throws UserError if the tree changed during the walk.
using WalkProgress = std::function<void(std::uint64_t entries, std::uint64_t artifacts)>;
ReconcileSummary walk_data_tree(int data_fd, const config::Layout& layout, index::Index::Rebuild& sink,
                                const WalkProgress& progress);

}  // namespace artifactfs::fs

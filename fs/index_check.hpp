// An offline check of a store's index against its data tree (`artifactfs
// fsck`): the same walk a rebuild makes, compared with the records instead
// of replacing them. Changes nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "fs/reconcile.hpp"
#include "index/index.hpp"

namespace artifactfs::fs {

struct IndexCheck {
  std::vector<std::string> differences;  // one line each, what differs and where
  std::uint64_t entries = 0;             // entries of the data tree walked
  std::uint64_t artifacts = 0;           // artifacts found in it
};

IndexCheck check_index(int data_fd, const config::Layout& layout, const index::Index& index,
                       const WalkProgress& progress);

}  // namespace artifactfs::fs

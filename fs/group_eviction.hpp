// Evicting an artifact of several entries (fs/artifact_groups.hpp) all
// together or not at all, also across a kill -9.
//
// One rename cannot move several entries, so an eviction stages them:
//   1. mkdir STORE/evicting/<id>.<seq>.<pid>.group
//   2. write its file ".members": the members' parent path below the data
//      root, then each member's name, NUL-separated
//   3. rename each member into it
//   4. rename the whole directory into STORE/trash (Trash::take), where it
//      is deleted like any evicted artifact (its name starts with the id).
// A failure in 3 moves the members taken so far back and removes the
// directory: nothing was evicted. A daemon killed during 2..4 leaves a
// staged directory; the next mount, before it recovers the index, finishes
// that eviction (finish_group_evictions): it renames the members still in
// the data tree into the directory and moves the directory into the trash.
// The index record then has no member left, and the recovery removes it.
// Only a staged directory without a complete ".members" file (killed in 1
// or 2, before any member moved) is rolled back instead: it is removed.
//
// Runs under the caller's serialisation (the file system's namespace lock,
// or the mount before requests are served); with the daemon's rights on the
// private store: parent directories are descriptors the caller resolved
// beneath the data root, members are single names acted on without
// following symlinks (renameat), and ".members" is resolved beneath the
// data root again at the next mount (open_beneath).
#pragma once

#include <string>
#include <vector>

#include "index/index.hpp"

namespace artifactfs::fs {

// Stages `members` (names in the directory `parent_fd`, whose path below the
// data root is `parent_path`) in a new directory of `staging_fd`. Returns 0
// and its name in `staged`, or an errno with nothing moved.
int stage_group(int staging_fd, int parent_fd, const std::string& parent_path, const std::vector<std::string>& members,
                index::ArtifactId id, std::string& staged);

// At mount, before the index is recovered: completes the evictions a killed
// daemon left staged and moves them into the trash. Returns how many.
std::size_t finish_group_evictions(int staging_fd, int data_fd, int trash_fd);

}  // namespace artifactfs::fs

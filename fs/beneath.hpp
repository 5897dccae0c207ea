// Resolving a stored path (an artifact's key, "ns/key") beneath the data
// root without following any symlink.
//
// The daemon keeps paths only in the index; everything else is reached from
// descriptors. Where it must act on such a path (eviction renames an
// artifact into the trash), a symlink planted anywhere on the path must not
// take the call out of the store: openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS refuses every symlink, magic link and "..", or, on a
// kernel without openat2, one component at a time with O_NOFOLLOW.
// Runs with the daemon's rights: callers use it on the private store only.
#pragma once

#include <string>
#include <string_view>

namespace artifactfs::fs {

// Opens `path` (relative, '/'-separated) beneath `root_fd` with `flags`
// (O_PATH, O_DIRECTORY, ...; O_NOFOLLOW and O_CLOEXEC are added). Returns a
// descriptor, or -1 with errno (ELOOP or EXDEV for a path that would follow a
// symlink or leave the tree). An empty path opens the root itself.
int open_beneath(int root_fd, std::string_view path, int flags);

// Splits "a/b/c" into ("a/b", "c"); ("", "c") for a single component.
std::pair<std::string, std::string> split_parent(std::string_view path);

}  // namespace artifactfs::fs

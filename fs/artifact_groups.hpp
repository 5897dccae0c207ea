// Artifacts that span several entries (layout.group-suffixes): entries at
// the artifact depth whose names differ only by one of the configured
// suffixes form one artifact. Its index record is named by the group's key,
// the entries' parent path and the name with its suffix removed, whether or
// not an entry of exactly that name exists (Turborepo's `<hash>.tar.zst` and
// `<hash>-meta.json` have the key `<hash>`).
//
// THE RULES
// - The key of a name is the name with the longest configured suffix it ends
//   with removed, if something is left; otherwise the name itself. Names with
//   the same key in the same directory are the members of one artifact.
// - A key has a record exactly while at least one of its members exists. A
//   member created (or renamed in) when others exist joins their record (its
//   last access, access count, pin and creation time); the first member
//   creates it; removing or renaming away the last member removes it.
// - Renaming a member to a name of another key moves its usage to that key;
//   if it was the only member and the other key has no record, the record
//   itself is renamed (an atomic publish keeps the artifact's identity).
// - Eviction takes every member or none (fs/group_eviction.hpp).
// Without suffixes configured every name is its own key and nothing here
// changes how artifacts behave.
//
// Stateless functions of the layout; safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace artifactfs::fs {

inline bool has_groups(const config::Layout& layout) { return !layout.group_suffixes.empty(); }

// The key of a name at the artifact depth (see THE RULES).
std::string_view group_key(const config::Layout& layout, std::string_view name);

// `path` (parent/name below the data root) with its last component replaced
// by that component's key.
std::string group_key_path(const config::Layout& layout, std::string_view path);

// Every name whose key is `key`: the key itself (if it is its own key) and
// the key with each suffix. Names that layout.keep matches are never
// members.
std::vector<std::string> group_member_names(const config::Layout& layout, std::string_view key);

// The members of `key` that exist in the directory open as `dirfd` (lstat,
// no symlink followed).
std::vector<std::string> existing_group_members(int dirfd, const config::Layout& layout, std::string_view key);

}  // namespace artifactfs::fs

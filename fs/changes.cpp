// The file system's side of the index's changed set (CHANGED SET in
// index/index.hpp): which keys a change marks before it touches the backing
// tree, and the outside tops it keeps up to date after namespace-level
// changes.
//
// WHAT MARKS WHAT
// - Content of an inode (write, fallocate, truncate, O_TRUNC, xattrs): the
//   inode's owner: its artifact, or the outside usage for namespaces and
//   kept entries.
// - A name made, removed or replaced (create, mkdir, mknod, symlink, link,
//   unlink, rmdir, both names of a rename): the owner of the directory it is
//   in (the directory's own size may change), and, for a name at namespace
//   level, the name's path (recovery then looks at that entry: a new, gone
//   or renamed artifact root, or a namespace to list) and the artifact it
//   names, if any. Below namespace level the directory's owner is the
//   entry's owner too.
// - Moves between artifacts (renames) mark both ends, so the usage that left
//   one and entered the other is re-walked on both sides.
// - Eviction marks the artifact (artifacts.cpp); the trash marks links()
//   when it gives back usage of an inode still linked elsewhere (trash.cpp).
// Hard links: only the name's owner is marked; a recovery that meets an
// inode with names in another unit walks the whole tree instead (see
// recover_changed.cpp), so the owners of its other names need no mark.
#include <spdlog/spdlog.h>

#include "fs/filesystem.hpp"
#include "fs/recover_changed.hpp"

namespace artifactfs::fs {

namespace {

using Key = index::Index::ChangeKey;

void add_key(std::vector<Key>& keys, Key key) {
  for (const auto& k : keys) {
    if (k == key) return;
  }
  keys.push_back(std::move(key));
}

Key owner_key(index::ArtifactId id) { return id == index::kOutside ? Key::outside() : Key::artifact(id); }

}  // namespace

void Filesystem::add_inode_keys(std::vector<Key>& keys, const Inode& inode) const {
  add_key(keys, owner_key(owner_id(inode)));
}

void Filesystem::add_entry_keys(std::vector<Key>& keys, const Inode& parent, const std::string& name) const {
  add_key(keys, owner_key(owner_id(parent)));
  const Role parent_role = parent.role;
  // Inside an artifact or a kept entry the parent's owner is the entry's.
  if (parent_role != Role::root && parent_role != Role::namespace_) return;
  auto path = child_path(parent, name);
  if (!path) {
    // Cannot name it: a crash from here on must walk everything.
    index_.mark_inconsistent();
    return;
  }
  add_key(keys, Key::path(*path));
  if (role_of_child(parent, name) == Role::artifact) {
    if (auto key = artifact_key(parent, name)) {
      if (auto id = index_.find(*key)) add_key(keys, Key::artifact(*id));
    }
  }
}

index::Index::Change Filesystem::mark_inode(const Inode& inode) {
  std::vector<Key> keys;
  add_inode_keys(keys, inode);
  return index_.begin_change(keys);
}

index::Index::Change Filesystem::mark_entry(const Inode& parent, const std::string& name) {
  std::vector<Key> keys;
  add_entry_keys(keys, parent, name);
  return index_.begin_change(keys);
}

index::Index::Change Filesystem::mark_entries(const Inode& parent, const std::string& name, const Inode& new_parent,
                                              const std::string& new_name) {
  std::vector<Key> keys;
  add_entry_keys(keys, parent, name);
  add_entry_keys(keys, new_parent, new_name);
  return index_.begin_change(keys);
}

std::optional<index::Index::Change> Filesystem::mark_late(const std::vector<index::ArtifactId>& owners) {
  std::vector<Key> keys;
  for (index::ArtifactId id : owners) add_key(keys, owner_key(id));
  try {
    return index_.begin_change(keys);
  } catch (const std::exception& e) {
    spdlog::error("could not record a change in the index ({}); the next mount after a crash walks the whole tree",
                  e.what());
    index_.mark_inconsistent();
    return std::nullopt;
  }
}

void Filesystem::refresh_outside_tops(const Inode& parent, const std::string& name) {
  const Role parent_role = parent.role;
  if (parent_role != Role::root && parent_role != Role::namespace_) return;
  try {
    auto path = child_path(parent, name);
    if (!path) {
      index_.mark_inconsistent();
      return;
    }
    index_.replace_outside_tops(*path, outside_tops_at(data_fd_, config_.layout, *path));
  } catch (const std::exception& e) {
    spdlog::error("could not record the outside entries at {} in the index ({}); the next mount after a crash "
                  "walks the whole tree",
                  name, e.what());
    index_.mark_inconsistent();
  }
}

}  // namespace artifactfs::fs

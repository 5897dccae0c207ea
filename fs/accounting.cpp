// Keeps the index's usage exact by incremental updates: every inode's usage
// is charged to the artifact that contains it (or to "outside"), and to the
// store totals once. An inode with several names may lie in several
// artifacts; the index's link table says where, so that each artifact
// counts it once and the totals count it once, as `du` does.
//
// The charge_* functions are called with namespace_mutex_ held and
// ownership_mutex_ held exclusively from before the backing change until
// after its accounting, so that no recharge() (which holds ownership_mutex_
// shared) sees the new names with the old owners or link counts. recharge()
// after writes needs neither (see filesystem.hpp). The one long step, the
// subtree walk of a rename between artifacts, is done by rename() before it
// takes either mutex, and checked under them (namespace_watch.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <shared_mutex>
#include <string>
#include <vector>

#include "fs/artifact_groups.hpp"
#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"
#include "fs/filesystem.hpp"

namespace artifactfs::fs {

namespace {

bool shared_inode(const struct stat& st) { return !S_ISDIR(st.st_mode) && st.st_nlink > 1; }
}  // namespace

void Filesystem::charge(index::ArtifactId owner, const index::Usage& delta) {
  index_.charge(owner, delta);
  mark_written(owner);
}

void Filesystem::mark_written(index::ArtifactId owner) {
  if (owner == index::kOutside) return;
  // A change of usage is a write in progress: see kWriteGrace.
  if (auto live = artifacts_.find(owner)) live->last_write_ns.store(now_ns(), std::memory_order_relaxed);
}

index::ArtifactId Filesystem::owner_id(const Inode& inode) const {
  std::lock_guard lock(inodes_.mutex());
  return inode.artifact ? inode.artifact->id : index::kOutside;
}

index::ArtifactId Filesystem::owner_of_child(const Inode& parent, const std::string& name) const {
  switch (role_of_child(parent, name)) {
    case Role::member:
      return owner_id(parent);
    case Role::artifact: {
      auto path = artifact_key(parent, name);
      if (!path) return index::kOutside;
      return index_.find(*path).value_or(index::kOutside);
    }
    default:
      return index::kOutside;
  }
}

void Filesystem::recharge(const InodePtr& inode, int open_fd) {
  // An open file's own descriptor serves (the write path); else the inode's.
  NodeFd pinned;
  int fd = open_fd;
  if (fd < 0) {
    pinned = node_fd(inode);
    if (!pinned) return;  // gone: its usage went with it
    fd = pinned.get();
  }
  // Renames that move entries between artifacts hold this exclusively, so
  // the owner read here stays the owner until the charge is made.
  std::shared_lock ownership(ownership_mutex_);
  std::shared_ptr<LiveArtifact> live;
  {
    std::lock_guard lock(inodes_.mutex());
    live = inode->artifact;
  }
  const index::ArtifactId owner = live ? live->id : index::kOutside;
  std::vector<index::ArtifactId> owners;
  index::Usage delta;
  {
    // The stat, the delta and the charge are one step per inode, so that an
    // unlink (charge_unlinked reads `accounted` under this mutex) sees either
    // all of a write's growth or none of it.
    std::lock_guard lock(inode->mutex);
    struct stat now;
    if (inode->gone || fstat(fd, &now) != 0) return;
    index::Usage current = usage_of(now);
    delta = current;
    delta += -inode->accounted;
    inode->accounted = current;
    if (delta == index::Usage{}) return;
    // An open file with no names left is no longer part of the tree.
    if (!S_ISDIR(now.st_mode) && now.st_nlink == 0) return;
    if (shared_inode(now)) {
      if (auto links = index_.links(now.st_ino)) {
        for (const auto& [id, count] : *links) {
          if (count > 0) owners.push_back(id);
        }
      }
    }
    if (owners.empty()) owners.push_back(owner);
    // Changed set: the change was marked before it was made (mark_inode);
    // this only covers what came without a mark (the owner changed under a
    // write, st_blocks settling before a release). In memory if marked.
    auto late = mark_late(owners);
    std::vector<std::pair<index::ArtifactId, index::Usage>> charges;
    for (index::ArtifactId id : owners) charges.emplace_back(id, delta);
    index_.charge_together(charges, delta);  // one step: a flush takes all or none
  }
  for (index::ArtifactId id : owners) mark_written(id);
  if (delta.disk_bytes > 0) notify_usage_grew();
}

index::Usage Filesystem::indexed_usage(const struct stat& st) const {
  // What the index counts for an inode we know is what we last charged,
  // which a write in flight may not have reached yet.
  if (InodePtr known = inodes_.find_backing(st.st_ino); known && known->type == (st.st_mode & S_IFMT)) {
    std::lock_guard lock(known->mutex);
    if (!known->gone) return known->accounted;
  }
  return usage_of(st);
}

void Filesystem::ensure_record(const Inode& parent, const std::string& name, ino_t root_ino) {
  if (role_of_child(parent, name) != Role::artifact) return;
  auto path = artifact_key(parent, name);
  if (!path) return;
  if (auto existing = index_.find(*path)) {
    if (has_groups(config_.layout)) return;  // a member of a group that exists: it joins
    // A record left by an entry that vanished without our seeing it.
    index_.remove_artifact(*existing);
  }
  index_.add_artifact(*path, now_ns(), {}, root_ino);
}

void Filesystem::charge_new(const Inode&, const Inode& child, const struct stat& st) {
  index::Usage usage = usage_of(st);
  const index::ArtifactId owner = owner_id(child);
  index_.charge_together({{owner, usage}}, usage);
  mark_written(owner);
  if (usage.disk_bytes > 0) notify_usage_grew();
}

void Filesystem::charge_unlinked(const Inode& parent, const std::string& name, const struct stat& before) {
  refresh_outside_tops(parent, name);  // changed set: the name is gone
  Role role = role_of_child(parent, name);
  index::ArtifactId owner = owner_of_child(parent, name);
  index::Usage usage = indexed_usage(before);
  if (shared_inode(before)) {
    index::LinkSet links = index_.links(before.st_ino).value_or(index::LinkSet{{owner, before.st_nlink}});
    auto it = links.find(owner);
    if (it != links.end() && --it->second == 0) {
      links.erase(it);
      charge(owner, -usage);
    }
    std::uint64_t remaining = 0;
    for (const auto& [id, count] : links) remaining += count;
    // Back to one name: the path alone says where it is, and the inode's
    // owner becomes the artifact of that name (writes through a handle
    // opened under the removed name are charged there).
    index_.set_links(before.st_ino, remaining > 1 ? links : index::LinkSet{});
    if (remaining == 1) move_owner(before.st_ino, links.begin()->first);
  } else {
    index_.charge_together({{owner, -usage}}, -usage);
    mark_written(owner);
  }
  if (role == Role::artifact && owner != index::kOutside) drop_records({owner});
}

void Filesystem::move_owner(ino_t ino, index::ArtifactId owner) {
  InodePtr inode = inodes_.find_backing(ino);
  if (!inode) return;
  std::shared_ptr<LiveArtifact> live = owner == index::kOutside ? nullptr : artifacts_.get(owner);
  {
    std::lock_guard lock(inodes_.mutex());
    inode->artifact = live;
  }
  if (live) {
    std::lock_guard lock(live->mutex);
    live->add_member_locked(inode);
  }
}

void Filesystem::charge_linked(const Inode& inode, const struct stat& before, const Inode& new_parent,
                               const std::string& new_name) {
  refresh_outside_tops(new_parent, new_name);  // changed set: a new name
  index::ArtifactId new_owner = owner_of_child(new_parent, new_name);
  index::ArtifactId old_owner = owner_id(inode);
  index::LinkSet links =
      index_.links(before.st_ino).value_or(index::LinkSet{{old_owner, static_cast<std::uint32_t>(before.st_nlink)}});
  if (links[new_owner]++ == 0) charge(new_owner, indexed_usage(before));
  index_.set_links(before.st_ino, links);
}

// Owners of every entry of a subtree whose top is `name` in `parent`, as the
// layout assigns them there. With `create`, artifact records are made for
// artifact roots in the subtree; otherwise existing records are looked up.
std::vector<index::ArtifactId> Filesystem::owners_in(const Inode& parent, const std::string& name,
                                                    const std::vector<SubtreeEntry>& entries, bool create,
                                                    std::vector<index::ArtifactId>& roots) {
  std::vector<index::ArtifactId> owners(entries.size(), index::kOutside);
  Role role = role_of_child(parent, name);
  auto base = child_path(parent, name);
  if (!base) return owners;
  const bool grouped = has_groups(config_.layout);
  // With groups an artifact-depth path is recorded under its group's key,
  // and a member joins its group's record (artifact_groups.hpp).
  auto record_for = [&](const std::string& entry_path, ino_t root_ino) -> index::ArtifactId {
    const std::string path = grouped ? group_key_path(config_.layout, entry_path) : entry_path;
    if (!create) return index_.find(path).value_or(index::kOutside);
    if (auto existing = index_.find(path)) {
      if (grouped) return *existing;
      index_.remove_artifact(*existing);  // stale
    }
    return index_.add_artifact(path, now_ns(), {}, grouped ? 0 : root_ino);
  };
  if (role == Role::kept || role == Role::root) return owners;
  if (role == Role::member) {
    std::fill(owners.begin(), owners.end(), owner_id(parent));
    return owners;
  }
  if (role == Role::artifact) {
    index::ArtifactId id = record_for(*base, entries.empty() ? 0 : entries.front().st.st_ino);
    if (id != index::kOutside) roots.push_back(id);
    std::fill(owners.begin(), owners.end(), id);
    return owners;
  }
  // A namespace: artifact roots lie `levels` below the top of the subtree.
  const int levels = config_.layout.depth - (parent.depth + 1);
  std::map<std::string, index::ArtifactId> root_ids;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& rel = entries[i].rel;
    if (rel.empty()) continue;
    // The first `levels` components name the artifact root, if none is kept.
    size_t pos = 0;
    int depth = 0;
    bool kept = false;
    while (depth < levels) {
      size_t slash = rel.find('/', pos);
      std::string component = rel.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
      if (is_kept_name(component)) kept = true;
      ++depth;
      if (slash == std::string::npos) {
        pos = rel.size();
        break;
      }
      pos = slash + 1;
    }
    if (kept || depth < levels) continue;
    std::string root_rel = pos >= rel.size() ? rel : rel.substr(0, pos - 1);
    auto [it, inserted] = root_ids.try_emplace(grouped ? group_key_path(config_.layout, root_rel) : root_rel,
                                               index::kOutside);
    if (inserted) {
      // The walk visits a directory before its entries: this is the root.
      it->second = record_for(*base + "/" + root_rel, root_rel == rel ? entries[i].st.st_ino : 0);
      if (it->second != index::kOutside) roots.push_back(it->second);
    }
    owners[i] = it->second;
  }
  return owners;
}

// Moves usage between owners; link counts follow each name. Entries with
// one name are summed per pair of owners, so that a subtree of a million
// files costs a few charges, not a million.
void Filesystem::move_usage(const std::vector<SubtreeEntry>& entries, const std::vector<index::ArtifactId>& from,
                            const std::vector<index::ArtifactId>& to) {
  std::map<std::pair<index::ArtifactId, index::ArtifactId>, index::Usage> moved;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (from[i] == to[i]) continue;
    const struct stat& st = entries[i].st;
    index::Usage usage = indexed_usage(st);
    if (shared_inode(st)) {
      index::LinkSet links =
          index_.links(st.st_ino).value_or(index::LinkSet{{from[i], static_cast<std::uint32_t>(st.st_nlink)}});
      auto it = links.find(from[i]);
      if (it != links.end() && --it->second == 0) {
        links.erase(it);
        charge(from[i], -usage);
      }
      if (links[to[i]]++ == 0) charge(to[i], usage);
      index_.set_links(st.st_ino, links);
    } else {
      moved[{from[i], to[i]}] += usage;
    }
  }
  for (const auto& [owners, usage] : moved) {
    index_.charge_together({{owners.first, -usage}, {owners.second, usage}}, {});
    mark_written(owners.first);
    mark_written(owners.second);
  }
}

bool Filesystem::rename_moves_between_artifacts(const Inode& old_parent, const std::string& old_name,
                                                const Inode& new_parent, const std::string& new_name,
                                                mode_t mode) const {
  Role from = role_of_child(old_parent, old_name);
  Role to = role_of_child(new_parent, new_name);
  if (from == Role::artifact && to == Role::artifact) return false;  // publish: tmp name -> key
  if (from == Role::member && to == Role::member && owner_id(old_parent) == owner_id(new_parent)) return false;
  bool outside_both = (from == Role::kept || from == Role::namespace_) && (to == Role::kept || to == Role::namespace_);
  if (outside_both && (!S_ISDIR(mode) || (from == Role::kept && to == Role::kept))) return false;
  if (from == Role::namespace_ && to == Role::namespace_ && old_parent.depth == new_parent.depth) return false;
  return true;
}

bool Filesystem::exchange_moves_between_artifacts(const Inode& parent, const std::string& name,
                                                  const Inode& new_parent, const std::string& new_name) const {
  Role a = role_of_child(parent, name);
  Role b = role_of_child(new_parent, new_name);
  if (a == Role::artifact && b == Role::artifact) return false;  // the records swap names
  if (a == b && (a != Role::member || owner_id(parent) == owner_id(new_parent)) && a != Role::namespace_) return false;
  return true;
}

void Filesystem::charge_renamed(const InodePtr& old_parent, const std::string& old_name, const InodePtr& new_parent,
                                const std::string& new_name, const struct stat& moved,
                                const std::vector<SubtreeEntry>* walked) {
  // Changed set: both names, before the fast paths return.
  refresh_outside_tops(*old_parent, old_name);
  refresh_outside_tops(*new_parent, new_name);
  Role from = role_of_child(*old_parent, old_name);
  Role to = role_of_child(*new_parent, new_name);
  auto old_path = child_path(*old_parent, old_name);
  auto new_path = child_path(*new_parent, new_name);
  inodes_.renamed(moved.st_ino, new_parent->ino, new_name);
  if (!old_path || !new_path) return;

  // Fast paths: the common renames keep every artifact's identity.
  if (!rename_moves_between_artifacts(*old_parent, old_name, *new_parent, new_name, moved.st_mode)) {
    if (from == Role::artifact && to == Role::artifact) {
      if (has_groups(config_.layout)) return charge_group_renamed(old_parent, old_name, new_parent, new_name, moved);
      if (auto id = index_.find(*old_path)) index_.rename_artifact(*id, *new_path);
    } else if (from == Role::namespace_ && to == Role::namespace_) {
      std::vector<std::pair<index::ArtifactId, std::string>> renames;
      std::string prefix = *old_path + "/";
      index_.for_each_with_prefix(prefix, [&](const index::ArtifactRecord& r) {
        renames.emplace_back(r.id, *new_path + "/" + r.name.substr(prefix.size()));
      });
      for (const auto& [id, name] : renames) index_.rename_artifact(id, name);
    }
    return;
  }

  // Anything else changes which artifact some entries belong to: walk it
  // (unless rename() walked it before taking namespace_mutex_).
  std::vector<SubtreeEntry> walked_here;
  if (!walked) {
    if (NodeFd new_parent_fd = node_fd(new_parent)) walked_here = walk_subtree(new_parent_fd.get(), new_name);
    walked = &walked_here;
  }
  const std::vector<SubtreeEntry>& entries = *walked;
  std::vector<index::ArtifactId> old_roots, new_roots;
  auto before = owners_in(*old_parent, old_name, entries, false, old_roots);
  drop_records(old_roots);
  auto after = owners_in(*new_parent, new_name, entries, true, new_roots);
  move_usage(entries, before, after);
  replace_subtree(moved.st_ino);
}

void Filesystem::charge_exchanged(const InodePtr& parent, const std::string& name, const struct stat& first,
                                  const InodePtr& new_parent, const std::string& new_name, const struct stat& second,
                                  const std::vector<SubtreeEntry>* walked_first,
                                  const std::vector<SubtreeEntry>* walked_second) {
  refresh_outside_tops(*parent, name);  // changed set: both names
  refresh_outside_tops(*new_parent, new_name);
  Role a = role_of_child(*parent, name);
  Role b = role_of_child(*new_parent, new_name);
  auto path_a = child_path(*parent, name);
  auto path_b = child_path(*new_parent, new_name);
  inodes_.renamed(first.st_ino, new_parent->ino, new_name);
  inodes_.renamed(second.st_ino, parent->ino, name);
  if (!path_a || !path_b) return;
  if (!exchange_moves_between_artifacts(*parent, name, *new_parent, new_name)) {
    if (a == Role::artifact && b == Role::artifact) {
      if (has_groups(config_.layout)) return charge_group_exchanged(parent, name, first, new_parent, new_name, second);
      auto id_a = index_.find(*path_a);
      auto id_b = index_.find(*path_b);
      if (id_a && id_b) index_.swap_names(*id_a, *id_b);  // one transaction: no temporary name
      else if (id_a) index_.rename_artifact(*id_a, *path_b);
      else if (id_b) index_.rename_artifact(*id_b, *path_a);
    }
    return;
  }

  // General case: detach both subtrees from where they were, then attach
  // both where they are now. Each is walked here unless rename() walked it
  // before taking namespace_mutex_.
  std::vector<SubtreeEntry> first_here, second_here;
  if (!walked_first) {
    if (NodeFd new_parent_fd = node_fd(new_parent)) first_here = walk_subtree(new_parent_fd.get(), new_name);
    walked_first = &first_here;
  }
  if (!walked_second) {
    if (NodeFd parent_fd = node_fd(parent)) second_here = walk_subtree(parent_fd.get(), name);
    walked_second = &second_here;
  }
  const auto& entries_first = *walked_first;
  const auto& entries_second = *walked_second;
  std::vector<index::ArtifactId> roots;
  auto before_first = owners_in(*parent, name, entries_first, false, roots);
  auto before_second = owners_in(*new_parent, new_name, entries_second, false, roots);
  drop_records(roots);
  roots.clear();
  auto after_first = owners_in(*new_parent, new_name, entries_first, true, roots);
  auto after_second = owners_in(*parent, name, entries_second, true, roots);
  move_usage(entries_first, before_first, after_first);
  move_usage(entries_second, before_second, after_second);
  replace_subtree(first.st_ino);
  replace_subtree(second.st_ino);
}

}  // namespace artifactfs::fs

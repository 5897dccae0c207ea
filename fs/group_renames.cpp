// Renames and exchanges between artifact-depth names when artifacts span
// several entries (layout.group-suffixes): which record an entry's usage
// belongs to follows its group's key, by the rules in artifact_groups.hpp.
// Called like the other charge_* functions: namespace_mutex_ held, and
// ownership_mutex_ held exclusively (see accounting.cpp), after the backing
// change, with the inode table already told the new names.
#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "fs/artifact_groups.hpp"
#include "fs/filesystem.hpp"
#include "fs/group_eviction.hpp"
#include "fs/trash.hpp"

namespace artifactfs::fs {

namespace {
std::vector<index::ArtifactId> all(std::size_t n, index::ArtifactId id) { return std::vector<index::ArtifactId>(n, id); }
}  // namespace

void Filesystem::charge_group_renamed(const InodePtr& old_parent, const std::string& old_name,
                                      const InodePtr& new_parent, const std::string& new_name,
                                      const struct stat& moved) {
  auto old_key = artifact_key(*old_parent, old_name);
  auto new_key = artifact_key(*new_parent, new_name);
  if (!old_key || !new_key || *old_key == *new_key) return;  // e.g. X.sig -> X.siginfo: same artifact
  const std::optional<index::ArtifactId> old_id = index_.find(*old_key);
  const std::optional<index::ArtifactId> new_id = index_.find(*new_key);
  const bool old_left = artifact_present(*old_parent, old_name);
  if (old_id && !new_id && !old_left) {
    // Its only entry became the first of another key (publish of a
    // temporary name): the artifact keeps its identity.
    index_.rename_artifact(*old_id, *new_key);
    return;
  }
  NodeFd new_parent_fd = node_fd(new_parent);
  std::vector<SubtreeEntry> entries =
      new_parent_fd ? walk_subtree(new_parent_fd.get(), new_name) : std::vector<SubtreeEntry>{};
  const index::ArtifactId from = old_id.value_or(index::kOutside);
  const index::ArtifactId to = new_id ? *new_id : index_.add_artifact(*new_key, now_ns(), {}, 0);
  move_usage(entries, all(entries.size(), from), all(entries.size(), to));
  if (old_id) drop_records({*old_id});  // only if no member is left
  replace_subtree(moved.st_ino);
}

void Filesystem::charge_group_exchanged(const InodePtr& parent, const std::string& name, const struct stat& first,
                                        const InodePtr& new_parent, const std::string& new_name,
                                        const struct stat& second) {
  auto key_a = artifact_key(*parent, name);
  auto key_b = artifact_key(*new_parent, new_name);
  if (!key_a || !key_b || *key_a == *key_b) return;
  // Both names are still taken, so both groups keep a member and a record.
  auto id_a = index_.find(*key_a);
  auto id_b = index_.find(*key_b);
  NodeFd parent_fd = node_fd(parent);
  NodeFd new_parent_fd = node_fd(new_parent);
  if (!parent_fd || !new_parent_fd) return;
  auto alone = [&](int fd, const std::string& key, const std::string& entry) {
    auto members = existing_group_members(fd, config_.layout, key);
    return members.size() == 1 && members.front() == entry;
  };
  const std::string leaf_a(group_key(config_.layout, name));
  const std::string leaf_b(group_key(config_.layout, new_name));
  if (id_a && id_b && alone(parent_fd.get(), leaf_a, name) && alone(new_parent_fd.get(), leaf_b, new_name)) {
    index_.swap_names(*id_a, *id_b);  // single entries: each artifact follows its entry, as without groups
    return;
  }
  const index::ArtifactId a = id_a ? *id_a : index_.add_artifact(*key_a, now_ns(), {}, 0);
  const index::ArtifactId b = id_b ? *id_b : index_.add_artifact(*key_b, now_ns(), {}, 0);
  // `first` went from key a to key b, `second` the other way.
  auto entries_first = walk_subtree(new_parent_fd.get(), new_name);
  auto entries_second = walk_subtree(parent_fd.get(), name);
  move_usage(entries_first, all(entries_first.size(), a), all(entries_first.size(), b));
  move_usage(entries_second, all(entries_second.size(), b), all(entries_second.size(), a));
  replace_subtree(first.st_ino);
  replace_subtree(second.st_ino);
}

int Filesystem::take_group(int parent_fd, const std::string& parent_path, const std::string& key,
                           index::ArtifactId id, std::vector<std::string>& members) {
  if (staging_fd_ < 0) return EIO;
  std::string staged;
  if (int err = stage_group(staging_fd_, parent_fd, parent_path, members, id, staged)) return err;
  // Out of the data tree now, all of them. Should moving the staged
  // directory into the trash fail, the next mount does it.
  if (int err = trash_.take(staging_fd_, staged, id)) {
    spdlog::error("evicted {}{}{}, but could not move it into the trash ({}); the next mount deletes it",
                  parent_path, parent_path.empty() ? "" : "/", key, std::strerror(err));
  }
  return 0;
}

}  // namespace artifactfs::fs

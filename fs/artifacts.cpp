// Artifacts as whole things: their paths, records made for entries the index
// did not know, re-placing inodes after renames, eviction, and telling the
// kernel about access times. Concurrency: see filesystem.hpp.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <set>
#include <unordered_map>

#include "fs/artifact_groups.hpp"
#include "fs/beneath.hpp"
#include "fs/group_eviction.hpp"
#include "fs/filesystem.hpp"
#include "fs/notifier.hpp"
#include "fs/usage.hpp"
#include "fs/trash.hpp"

namespace artifactfs::fs {

std::optional<std::string> Filesystem::child_path(const Inode& parent, const std::string& name) const {
  if (parent.role == Role::root) return name;
  auto base = inodes_.path_of(parent);
  if (!base) return std::nullopt;
  return *base + "/" + name;
}

std::optional<std::string> Filesystem::artifact_key(const Inode& parent, const std::string& name) const {
  if (!has_groups(config_.layout)) return child_path(parent, name);
  return child_path(parent, std::string(group_key(config_.layout, name)));
}

bool Filesystem::artifact_present(const Inode& parent, const std::string& name) {
  InodePtr self = inodes_.find_backing(parent.ino);
  NodeFd fd = self ? node_fd(self) : NodeFd{};
  if (!fd) return false;
  if (!has_groups(config_.layout)) {
    struct stat st;
    return fstatat(fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  }
  return !existing_group_members(fd.get(), config_.layout, group_key(config_.layout, name)).empty();
}

void Filesystem::drop_records(const std::vector<index::ArtifactId>& ids) {
  for (index::ArtifactId id : ids) {
    if (has_groups(config_.layout)) {
      // Another member still there keeps the group's record (and its usage,
      // which the caller moved entry by entry).
      if (auto record = index_.get(id)) {
        const auto [parent_path, key] = split_parent(record->name);
        int parent_fd = open_beneath(data_fd_, parent_path, O_PATH | O_DIRECTORY);
        bool present = parent_fd >= 0 && !existing_group_members(parent_fd, config_.layout, key).empty();
        if (parent_fd >= 0) close(parent_fd);
        if (present) continue;
      }
    }
    index_.remove_artifact(id);
    artifacts_.erase(id);
  }
}

int Filesystem::check_new_name(const Inode& parent, const char* name) const {
  std::string n = name;
  if (n.size() > NAME_MAX) return ENAMETOOLONG;
  if (role_of_child(parent, n) != Role::artifact) return 0;
  auto path = child_path(parent, n);
  return path && path->size() > index::kMaxArtifactName ? ENAMETOOLONG : 0;
}

std::optional<index::ArtifactId> Filesystem::adopt(const std::string& path, int parent_fd, const std::string& name,
                                                   ino_t ino) {
  // Lookups run concurrently with namespace changes: a record may be about
  // to be made (mkdir between mkdirat and its record) or the entry may just
  // have been renamed or evicted. Decide under the namespace lock.
  std::lock_guard ns(namespace_mutex_);
  if (auto id = index_.find(path)) return id;
  struct stat st;
  if (fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_ino != ino) return std::nullopt;
  // Only reachable if the data tree was changed behind the daemon's back.
  // A group is measured whole: every member that exists.
  const bool grouped = has_groups(config_.layout);
  std::vector<std::string> entries =
      grouped ? existing_group_members(parent_fd, config_.layout, group_key(config_.layout, name))
              : std::vector<std::string>{name};
  index::Usage usage;
  std::set<ino_t> seen;
  index::TimeNs created = ctime_ns(st);
  for (const auto& entry_name : entries) {
    for (const auto& entry : walk_subtree(parent_fd, entry_name)) {
      if (entry.rel.empty()) created = std::min(created, ctime_ns(entry.st));
      if (!S_ISDIR(entry.st.st_mode) && entry.st.st_nlink > 1 && !seen.insert(entry.st.st_ino).second) continue;
      usage += usage_of(entry.st);
    }
  }
  spdlog::warn("artifact {} was missing from the index; added it ({} bytes on disk)", path, usage.disk_bytes);
  return index_.add_artifact(path, created, usage, grouped ? 0 : ino);
}

int Filesystem::finish_create(const InodePtr& parent, int parent_fd, const char* name, fuse_entry_param& e,
                              InodePtr* out) {
  watch_.record(parent->ino);  // a name made (namespace_watch.hpp)
  struct stat st;
  if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  InodePtr inode;
  int err = 0;
  try {
    ensure_record(*parent, name, st.st_ino);
    err = do_lookup(parent, name, e, &inode);
    if (!err && !inode) err = ENOENT;
  } catch (...) {
    undo_new_entry(*parent, parent_fd, name, st.st_ino);
    throw;
  }
  if (err) {
    undo_new_entry(*parent, parent_fd, name, st.st_ino);
    return err;
  }
  charge_new(*parent, *inode, e.attr);
  refresh_outside_tops(*parent, name);  // changed set
  recharge(parent);
  if (out) *out = inode;
  return 0;
}

void Filesystem::undo_new_entry(const Inode& parent, int parent_fd, const std::string& name, ino_t ino) {
  try {
    struct stat st;
    if (fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == ino &&
        unlinkat(parent_fd, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0) {
      spdlog::error("could not remove {} after its creation failed: {}", name, std::strerror(errno));
      index_.mark_inconsistent();
    }
    if (role_of_child(parent, name) == Role::artifact) {
      if (auto path = artifact_key(parent, name)) {
        // A group the new entry had joined keeps its record.
        if (auto id = index_.find(*path)) drop_records({*id});
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("could not undo the creation of {}: {}", name, e.what());
    index_.mark_inconsistent();
  }
}

void Filesystem::after_change(const char* what, const std::function<void()>& bookkeeping) {
  try {
    bookkeeping();
  } catch (const std::exception& e) {
    spdlog::error("{}: the change was made but its accounting failed ({}); the index will be rebuilt from the data "
                  "tree at the next mount",
                  what, e.what());
    index_.mark_inconsistent();
  }
}

int Filesystem::check_renamed_keys(const InodePtr& parent, const std::string& name, const InodePtr& new_parent,
                                   const std::string& new_name, const struct stat& moved) const {
  if (!S_ISDIR(moved.st_mode)) return 0;
  if (role_of_child(*parent, name) != Role::namespace_ || role_of_child(*new_parent, new_name) != Role::namespace_) {
    return 0;
  }
  auto old_path = child_path(*parent, name);
  auto new_path = child_path(*new_parent, new_name);
  if (!old_path || !new_path || new_path->size() <= old_path->size()) return 0;
  const std::string prefix = *old_path + "/";
  std::size_t longest = 0;
  index_.for_each_with_prefix(prefix, [&](const index::ArtifactRecord& r) {
    longest = std::max(longest, r.name.size() - prefix.size());
  });
  return longest > 0 && new_path->size() + 1 + longest > index::kMaxArtifactName ? ENAMETOOLONG : 0;
}

void Filesystem::replace_subtree(ino_t top) {
  auto moved = inodes_.subtree(top);
  // Parents before children: sort by the length of the recorded path.
  std::vector<std::pair<size_t, InodePtr>> ordered;
  for (auto& inode : moved) {
    auto path = inodes_.path_of(*inode);
    ordered.emplace_back(path ? std::count(path->begin(), path->end(), '/') : 0, inode);
  }
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& entry : ordered) {
    const InodePtr& inode = entry.second;
    auto [parent, name] = inodes_.place_of(*inode);
    if (!parent || name.empty()) continue;
    Role role = role_of_child(*parent, name);
    std::shared_ptr<LiveArtifact> live;
    if (role == Role::artifact) {
      if (auto path = artifact_key(*parent, name)) {
        if (auto id = index_.find(*path)) live = artifacts_.get(*id);
      }
    } else if (role == Role::member) {
      std::lock_guard lock(inodes_.mutex());
      live = parent->artifact;
    }
    {
      std::lock_guard lock(inodes_.mutex());
      inode->depth = parent->depth + 1;
      inode->role = role;
      inode->artifact = live;
    }
    if (live) {
      std::lock_guard lock(live->mutex);
      live->add_member_locked(inode);
      if (role == Role::artifact) live->add_root_locked(inode);
    }
  }
}

void Filesystem::notify_usage_grew() {
  if (quota_) quota_->usage_grew();
}

quota::SpaceInfo Filesystem::backing_space() {
  struct statvfs sv;
  if (fstatvfs(data_fd_, &sv) != 0) return {};
  return {static_cast<std::uint64_t>(sv.f_blocks) * sv.f_frsize, static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize};
}

void Filesystem::wait_for_deletions() { trash_.drain(); }

std::uint64_t Filesystem::pending_deletion_bytes() { return trash_.pending_bytes(); }

std::uint64_t Filesystem::protections_ended() { return LiveArtifact::protections_ended.load(); }

index::TimeNs Filesystem::write_grace_ends(index::ArtifactId id) {
  auto live = artifacts_.find(id);
  if (!live) return 0;
  return live->last_write_ns.load(std::memory_order_relaxed) +
         std::chrono::duration_cast<std::chrono::nanoseconds>(kWriteGrace).count();
}

std::shared_ptr<void> Filesystem::prepare(const std::vector<index::ArtifactId>& candidates) {
  // One write for a page of candidates instead of one per eviction: evict()
  // then finds each mark made (begin_change writes only rows not yet
  // committed). Marking candidates that are then passed over costs only a
  // little more work for a recovery after a crash.
  std::vector<index::Index::ChangeKey> keys;
  keys.reserve(candidates.size());
  for (index::ArtifactId id : candidates) keys.push_back(index::Index::ChangeKey::artifact(id));
  try {
    return std::make_shared<index::Index::Change>(index_.begin_change(keys));
  } catch (const index::IndexError& e) {
    spdlog::debug("quota: could not mark a page of eviction candidates ({}); each eviction marks its own", e.what());
    return {};
  }
}

bool Filesystem::in_use(index::ArtifactId id) {
  std::shared_ptr<LiveArtifact> live = artifacts_.find(id);
  if (!live) return false;
  std::lock_guard lock(live->mutex);
  return live->leases > 0;
}

std::unordered_map<ino_t, index::ArtifactId> Filesystem::linked_elsewhere(LiveArtifact& live,
                                                                          index::ArtifactId id) const {
  std::vector<InodePtr> files;
  {
    std::lock_guard lock(live.mutex);
    for (const auto& weak : live.members) {
      if (InodePtr inode = weak.lock(); inode && inode->type != S_IFDIR) files.push_back(std::move(inode));
    }
  }
  std::unordered_map<ino_t, index::ArtifactId> out;
  for (const InodePtr& inode : files) {
    auto links = index_.links(inode->ino);  // only files with several names have a link record
    if (!links) continue;
    for (const auto& [owner, count] : *links) {
      if (owner != id && owner != index::kOutside && count > 0) {
        out.emplace(inode->ino, owner);
        break;
      }
    }
  }
  return out;
}

quota::EvictOutcome Filesystem::evict(index::ArtifactId id, index::Usage& freed, Need need,
                                      index::EvictionReason reason) {
  std::unique_lock ns(namespace_mutex_);
  auto record = index_.get(id);
  if (!record) return quota::EvictOutcome::missing;
  std::shared_ptr<LiveArtifact> live = artifacts_.get(id);
  {
    std::lock_guard lock(live->mutex);
    if (live->leases > 0) {
      live->eviction_waits = true;  // its last release tells the quota (protections_ended)
      return quota::EvictOutcome::in_use;
    }
    // A routine cleanup leaves a half-written artifact alone for a while; a
    // writer that needs the room takes it in its LRU turn.
    auto since_write = std::chrono::nanoseconds(now_ns() - live->last_write_ns.load(std::memory_order_relaxed));
    if (need == Need::cleanup && since_write < kWriteGrace) return quota::EvictOutcome::recently_written;
    live->evicted = true;  // from here on every lease on it fails
  }
  // Changed set: marked before the rename takes it out of the tree, held
  // until its charges are made (a crash in between re-walks it).
  index::Index::Change change;
  try {
    change = index_.begin_change({index::Index::ChangeKey::artifact(id)});
  } catch (const index::IndexError& e) {
    spdlog::error("not evicting {}: the index cannot record the change: {}", record->name, e.what());
    std::lock_guard lock(live->mutex);
    live->evicted = false;
    return quota::EvictOutcome::in_use;
  }
  // The record's path is resolved beneath the data root without following
  // any symlink, and its top entry must still be the inode the record
  // describes: the daemon renames nothing it did not mean to.
  const auto [parent_path, name] = split_parent(record->name);
  const bool grouped = has_groups(config_.layout);
  int parent_fd = open_beneath(data_fd_, parent_path, O_PATH | O_DIRECTORY);
  int err = parent_fd < 0 ? errno : 0;
  // Its top entries: the one named by the record, or every member of its
  // group (the record is named by the group's key).
  std::vector<std::string> tops;
  std::vector<ino_t> top_inos;
  if (!err) {
    tops = grouped ? existing_group_members(parent_fd, config_.layout, name) : std::vector<std::string>{name};
    for (const auto& t : tops) {
      struct stat st;
      if (fstatat(parent_fd, t.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        err = errno;
        break;
      }
      top_inos.push_back(st.st_ino);
    }
    if (!err && tops.empty()) err = ENOENT;
  }
  if (!err && !grouped && record->root_ino != 0 && top_inos.front() != record->root_ino) {
    spdlog::error("not evicting {}: its entry is inode {}, the index describes inode {} (changed behind the "
                  "daemon's back; `artifactfs mount --rebuild-index` re-reads the tree)",
                  record->name, top_inos.front(), record->root_ino);
    err = ESTALE;
  } else if (err == ELOOP || err == EXDEV || err == ENOTDIR) {
    spdlog::error("not evicting {}: its path passes through a symlink or leaves the data tree", record->name);
  }
  // Files of this artifact with names in another one live on there. Read
  // before the trash may delete this artifact's names (and update the links).
  std::unordered_map<ino_t, index::ArtifactId> survivors;
  if (!err) survivors = linked_elsewhere(*live, id);
  // The trash counts the bytes it holds until they are deleted (usage).
  const auto trash_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, record->usage.disk_bytes));
  if (!err) {
    err = grouped ? take_group(parent_fd, parent_path, name, id, tops, trash_bytes)
                  : trash_.take(parent_fd, name, id, trash_bytes);
  }
  if (err != 0) {
    if (parent_fd >= 0) close(parent_fd);
    std::lock_guard lock(live->mutex);
    live->evicted = false;
    if (err != ENOENT && err != ESTALE && err != ELOOP && err != EXDEV && err != ENOTDIR) {
      spdlog::error("could not evict {}: moving it to the trash failed: {}", record->name, std::strerror(err));
    }
    return quota::EvictOutcome::missing;
  }
  // The record goes at once for every reader, but its LMDB delete is queued:
  // the eviction walk commits a batch of them (with the totals and
  // statistics charged here) in one transaction (quota/eviction_walk.hpp).
  // A crash before that commit leaves the record of an artifact that is in
  // the trash under a name that starts with its id: the next mount's
  // recovery re-walks it (it is marked, see prepare()), and Trash::start()
  // removes any such record left. The removed record carries every change
  // charged up to now, so the totals lose exactly what the index counted.
  if (auto removed = index_.remove_artifact_queued(id)) *record = std::move(*removed);
  index_.log_eviction(*record, reason, now_ns());  // committed with the removal
  // Changed set: charged to the removed id too (its tombstone), in one step
  // with the totals, so that the flush that commits the totals without it
  // also brings its tombstone to zero (index.hpp, REMOVED ARTIFACTS).
  index_.charge_together({{id, -record->usage}}, -record->usage);
  index_.count(index::Stat::evictions);
  index_.count(index::Stat::bytes_evicted, static_cast<std::uint64_t>(std::max<std::int64_t>(0, record->usage.disk_bytes)));

  // Close our descriptors on its inodes so that deleting them frees space
  // now, not when the kernel forgets them. Only inodes still placed in this
  // artifact: one moved elsewhere since (a rename, a hard link's owner
  // change) lives on there.
  std::vector<std::weak_ptr<Inode>> members;
  std::vector<InodePtr> roots;
  {
    std::lock_guard lock(live->mutex);
    members.swap(live->members);
    roots = live->live_roots_locked();
  }
  for (auto& weak : members) {
    InodePtr inode = weak.lock();
    if (!inode) continue;
    {
      std::lock_guard lock(inodes_.mutex());
      if (inode->artifact != live) continue;
    }
    // A file with names in other artifacts lives on there: it becomes the
    // inode of one of them (as when its last name here is unlinked).
    // A file with names in other artifacts lives on there: it becomes the
    // inode of one of them (as when its last name here is unlinked).
    if (auto other = survivors.find(inode->ino); other != survivors.end()) {
      move_owner(inode->ino, other->second);
      continue;
    }
    {
      std::lock_guard lock(inode->mutex);
      inode->gone = true;
    }
    inodes_.close_fd(*inode);  // or when the operation using it ends
  }
  artifacts_.erase(id);
  // The kernel may know the entry (and have the parent's listing cached)
  // without our knowing the artifact's root inode: find the parent by inode.
  struct stat parent_st;
  const bool parent_stat = fstat(parent_fd, &parent_st) == 0;
  InodePtr parent = parent_stat ? inodes_.find_backing(parent_st.st_ino) : nullptr;
  if (parent_stat) watch_.record(parent_st.st_ino);  // a name gone (namespace_watch.hpp)
  close(parent_fd);
  // The kernel has a dentry for the name only if it holds the inode the name
  // led to (every LOOKUP, READDIRPLUS entry and create counts in nlookup).
  // Most victims are long forgotten: their invalidation would only cost the
  // notifier a round trip to be told ENOENT, once per eviction.
  std::vector<std::string> known_entries;
  for (std::size_t i = 0; i < tops.size(); ++i) {
    if (InodePtr top_inode = inodes_.find_backing(top_inos[i])) {
      std::lock_guard lock(inodes_.mutex());
      if (top_inode->nlookup > 0) known_entries.push_back(tops[i]);
    }
  }
  // The names the evicted top entries had (a root renamed elsewhere since
  // lives on there).
  for (const InodePtr& root : roots) {
    ino_t root_parent;
    std::string root_name;
    {
      std::lock_guard lock(inodes_.mutex());
      root_parent = root->parent;
      root_name = root->name;
    }
    if (std::find(tops.begin(), tops.end(), root_name) == tops.end()) continue;
    if (parent && root_parent != parent->ino) continue;
    inodes_.unlinked(root_parent, root_name, root->ino);
  }
  ns.unlock();

  if (parent) {
    for (const auto& entry : known_entries) notifier_.entry_gone(parent->node, entry);
    notifier_.contents_changed(parent->node);  // its cached listing (coalesced by the notifier)
  }
  spdlog::debug("evicted {} ({} bytes on disk)", record->name, record->usage.disk_bytes);
  freed = record->usage;
  return quota::EvictOutcome::evicted;
}

void Filesystem::drop_idle_pages() {
  for (const InodePtr& inode : long_held_.take_idle(now_ns(), flush_interval_ns_)) {
    notifier_.contents_changed(inode->node);
  }
}

void Filesystem::access_times_changed(const std::vector<index::ArtifactId>& ids) {
  drop_idle_pages();
  for (index::ArtifactId id : ids) {
    auto live = artifacts_.find(id);
    if (!live) continue;
    // Like relatime: the kernel's cached attributes of the root (its st_atime
    // is the last access) are refreshed only once they are older than
    // index.atime-precision. Each refresh costs a GETATTR at the next
    // open below the root (default_permissions checks the cached mode), so
    // without this every open would cost three round trips. The index's
    // order is exact whatever `stat` shows.
    if (atime_precision_ns_ > 0 && live->last_use_ns.load(std::memory_order_relaxed) -
                                           live->shown_atime_ns.load(std::memory_order_relaxed) <
                                       atime_precision_ns_) {
      continue;
    }
    std::vector<InodePtr> roots;
    {
      std::lock_guard lock(live->mutex);
      roots = live->live_roots_locked();
    }
    for (const InodePtr& root : roots) {
      bool known;
      {
        std::lock_guard lock(inodes_.mutex());
        known = root->nlookup > 0;
      }
      if (known) notifier_.attributes_changed(root->node);
    }
  }
}

}  // namespace artifactfs::fs

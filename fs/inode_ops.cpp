// Lookup, forget, attributes, links and statfs: the operations that resolve
// names to inodes and describe them. Concurrency: see filesystem.hpp.
#include <fcntl.h>
#include <fnmatch.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <algorithm>
#include <climits>
#include <limits>
#include <cstring>
#include <optional>

#include "fs/artifact_groups.hpp"
#include "fs/credentials.hpp"
#include "fs/filesystem.hpp"
#include "fs/handle.hpp"
#include "fs/trash.hpp"

namespace artifactfs::fs {

index::TimeNs now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {
int open_path_fd(int dirfd, const char* name) {
  return openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
}

ino_t stat_ino(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}
}  // namespace

Filesystem::Filesystem(int data_fd, Trash& trash, Notifier& notifier, index::Index& index,
                       const config::Config& config, std::size_t max_open_nodes)
    : data_fd_(data_fd),
      trash_(trash),
      notifier_(notifier),
      index_(index),
      config_(config),
      inodes_(open_path_fd(data_fd, "."), stat_ino(data_fd), max_open_nodes, data_fd),
      flush_interval_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(config.index.flush_interval).count()),
      atime_precision_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(config.index.atime_precision).count()),
      entry_timeout_(std::chrono::duration<double>(config.fuse.entry_timeout).count()),
      attr_timeout_(std::chrono::duration<double>(config.fuse.attr_timeout).count()) {
  if (has_groups(config_.layout)) {
    // STORE/evicting, the data directory's sibling (made by Store).
    staging_fd_ = openat(data_fd, "../evicting", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (staging_fd_ < 0) {
      spdlog::error("cannot open the eviction staging directory: {}; artifacts of several entries are not evicted",
                    std::strerror(errno));
    }
  }
}

Filesystem::~Filesystem() {
  if (staging_fd_ >= 0) close(staging_fd_);
}

std::string Filesystem::proc_path(int fd) const { return "/proc/self/fd/" + std::to_string(fd); }

InodePtr Filesystem::inode_of(fuse_ino_t ino) const { return inodes_.find(ino); }


bool Filesystem::is_kept_name(const std::string& name) const {
  for (const auto& glob : config_.layout.keep) {
    if (fnmatch(glob.c_str(), name.c_str(), FNM_PERIOD) == 0) return true;
  }
  return false;
}

Role Filesystem::role_of_child(const Inode& parent, const std::string& name) const {
  switch (parent.role) {
    case Role::kept:
      return Role::kept;
    case Role::artifact:
    case Role::member:
      return Role::member;
    case Role::root:
    case Role::namespace_:
      break;
  }
  if (is_kept_name(name)) return Role::kept;
  return parent.depth + 1 < config_.layout.depth ? Role::namespace_ : Role::artifact;
}

Lease Filesystem::lease_for(const Inode& inode) const {
  std::shared_ptr<LiveArtifact> artifact;
  {
    std::lock_guard lock(inodes_.mutex());
    artifact = inode.artifact;
  }
  return Lease(std::move(artifact));
}

void Filesystem::fill_attr(const Inode& inode, struct stat& st) const {
  // st_ino stays the backing inode number: stable across remounts.
  if (inode.role != Role::artifact) return;
  std::shared_ptr<LiveArtifact> artifact;
  {
    std::lock_guard lock(inodes_.mutex());
    artifact = inode.artifact;
  }
  if (!artifact) return;
  if (auto record = index_.get(artifact->id)) {
    st.st_atim.tv_sec = record->last_access / 1'000'000'000;
    st.st_atim.tv_nsec = record->last_access % 1'000'000'000;
    // What the kernel will show until told otherwise (access_times_changed).
    artifact->shown_atime_ns.store(record->last_access, std::memory_order_relaxed);
  }
}

namespace {
bool is_evicting(LiveArtifact& live) {
  std::lock_guard lock(live.mutex);
  return live.evicted;
}
}  // namespace

int Filesystem::do_lookup(const InodePtr& parent, const std::string& name, fuse_entry_param& e, InodePtr* out,
                          bool count_lookup) {
  std::memset(&e, 0, sizeof e);
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  NodeFd pinned_parent = node_fd(parent);
  if (!pinned_parent) return errno == ENOENT ? ENOENT : ESTALE;
  const int parent_fd = pinned_parent.get();

  Role role = role_of_child(*parent, name);
  std::optional<index::ArtifactId> artifact_id;
  std::shared_ptr<LiveArtifact> parent_artifact;
  if (role == Role::member) {
    std::lock_guard lock(inodes_.mutex());
    parent_artifact = parent->artifact;
  }

  int fd = open_path_fd(parent_fd, name.c_str());
  if (fd < 0) {
    int err = errno;
    if (err == EMFILE || err == ENFILE) {
      static std::atomic<std::int64_t> last_warning{0};
      std::int64_t now = now_ns();
      if (now - last_warning.exchange(now) > 60'000'000'000) {
        spdlog::warn("out of file descriptors: open files and directories of clients use one each beside the "
                     "inode cache (fuse.max-open-nodes); raise the limit (systemd: LimitNOFILE=1048576) or lower "
                     "fuse.max-open-nodes");
      }
    }
    if (err == ENOENT) {
      if (role == Role::artifact) index_.count(index::Stat::misses);
      // Negative entries may be cached: every change of the data tree comes
      // through this mount, and evictions invalidate explicitly.
      e.ino = 0;
      e.entry_timeout = entry_timeout_;
      return 0;
    }
    return err;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return err;
  }
  if (role == Role::artifact) {
    auto path = artifact_key(*parent, name);
    if (!path) {
      close(fd);
      return ESTALE;
    }
    artifact_id = index_.find(*path);
    if (!artifact_id) artifact_id = adopt(*path, parent_fd, name, st.st_ino);
    if (!artifact_id) {  // renamed or evicted while we looked
      close(fd);
      e.ino = 0;
      return 0;
    }
  }
  std::shared_ptr<LiveArtifact> live;
  if (artifact_id) live = artifacts_.get(*artifact_id);
  else if (parent_artifact) live = parent_artifact;
  if (artifact_id && is_evicting(*live)) {
    // Being evicted: a member of a group not yet moved is already absent,
    // like the ones that are (not cached: should the eviction fail, it is
    // there again).
    close(fd);
    e.ino = 0;
    e.entry_timeout = 0;
    return 0;
  }

  InodePtr inode = inodes_.remember(parent, name, st, fd, [&](const InodePtr& child, const Inode& p) {
    child->depth = p.depth + 1;
    child->role = role;
    bool known = child->artifact == live;
    child->artifact = live;
    if (live && !known) {
      std::lock_guard lock(live->mutex);
      live->add_member_locked(child);
      if (role == Role::artifact) live->add_root_locked(child);
    }
  }, count_lookup);
  e.ino = inode->node;
  {
    std::lock_guard lock(inode->mutex);
    e.generation = generation_of(inode->handle);
  }
  e.attr = st;
  fill_attr(*inode, e.attr);
  e.attr_timeout = attr_timeout_;
  e.entry_timeout = entry_timeout_;
  if (out) *out = inode;
  return 0;
}

int Filesystem::lookup(fuse_req_t req, fuse_ino_t parent_ino, const char* name) {
  fuse_entry_param e;
  std::string n = name;
  if (n == "." || n == "..") {
    // Asked by the kernel for NFS file handles after it forgot the inode,
    // or after a restart of the daemon.
    InodePtr self = resolve_node(parent_ino);
    if (!self) return ESTALE;
    NodeFd pinned = node_fd(self);
    if (!pinned) return ESTALE;
    const int fd = pinned.get();
    struct stat st;
    if (n == "." || self->role == Role::root) {
      // "." works for files too; the root is its own parent.
      if (fstat(fd, &st) != 0) return errno;
    } else {
      int target = openat(fd, "..", O_PATH | O_CLOEXEC);
      if (target < 0) return errno;
      int rc = fstat(target, &st);
      close(target);
      if (rc != 0) return errno;
    }
    InodePtr found = n == "." || self->role == Role::root ? self : inodes_.find_backing(st.st_ino);
    found = found ? inodes_.revive(found->node) : resolve_node(st.st_ino);
    if (!found) return ESTALE;
    {
      std::lock_guard lock(inodes_.mutex());
      found->nlookup++;
    }
    std::memset(&e, 0, sizeof e);
    e.ino = found->node;
    {
      std::lock_guard lock(found->mutex);
      e.generation = generation_of(found->handle);
    }
    e.attr = st;
    fill_attr(*found, e.attr);
    e.attr_timeout = attr_timeout_;
    e.entry_timeout = entry_timeout_;
    fuse_reply_entry(req, &e);
    return 0;
  }
  InodePtr parent = inode_of(parent_ino);
  if (!parent) return ESTALE;
  int err = do_lookup(parent, n, e);
  if (err) return err;
  fuse_reply_entry(req, &e);
  return 0;
}

void Filesystem::forget(fuse_ino_t ino, std::uint64_t nlookup) { inodes_.forget(ino, nlookup); }

InodePtr Filesystem::resolve_node(std::uint64_t node) {
  if (InodePtr known = inodes_.revive(node)) return known;
  index::NodeTable* nodes = inodes_.node_table();
  // Node ids from the private range (inode numbers reused while the kernel
  // held the old one) do not outlive the daemon.
  if (!nodes || node >= (1ull << 63)) return nullptr;
  // The chain of stored places up to an inode in memory (the root at
  // least), then looked up downwards by name like any lookup: placement in
  // the layout and the checks of do_lookup apply. Each step must find the
  // inode the table names, with the same file handle (so the same
  // generation): a reused inode number is never taken for the old file.
  std::vector<std::pair<ino_t, index::NodePlace>> chain;
  InodePtr base;
  for (ino_t at = static_cast<ino_t>(node); !(base = inodes_.find_backing(at));) {
    auto place = nodes->find(at);
    if (!place || chain.size() > (1u << 16)) return nullptr;
    chain.emplace_back(at, *place);
    at = static_cast<ino_t>(place->parent);
  }
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const auto& [ino, place] = *it;
    fuse_entry_param e;
    InodePtr child;
    if (do_lookup(base, place.name, e, &child, false) != 0 || !child) return nullptr;
    BackingHandle handle;
    {
      std::lock_guard lock(child->mutex);
      handle = child->handle;
    }
    if (child->ino != ino || encode_handle(handle) != place.handle) return nullptr;
    base = child;
  }
  return base;
}

int Filesystem::getattr(fuse_req_t req, fuse_ino_t ino) {
  getattr_requests_.fetch_add(1, std::memory_order_relaxed);
  InodePtr inode = inode_of(ino);
  if (!inode) return ESTALE;
  NodeFd fd = node_fd(inode);
  if (!fd) return errno == ESTALE ? ESTALE : ENOENT;
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return errno;
  fill_attr(*inode, st);
  fuse_reply_attr(req, &st, attr_timeout_);
  return 0;
}

int Filesystem::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  Held held;
  if (int err = hold(ino, held)) return err;
  const InodePtr& inode = held.inode;
  const int fd = held.fd;
  const bool symlink = S_ISLNK(inode->type);
  std::string path = proc_path(fd);
  int handle_fd = fi ? Handle::of(fi)->fd : -1;
  // Every change below acts on the inode's own descriptor (or, for a
  // symlink's times, on its name in its parent without following it) with
  // the caller's credentials: the backing filesystem checks ownership for
  // chmod, chown and times, and write access for truncation, as the kernel
  // did against the mount's attributes.
  // Changed set (changes.cpp): a truncation changes usage; marked before.
  index::Index::Change change;
  if (to_set & FUSE_SET_ATTR_SIZE) change = mark_inode(*inode);
  std::optional<AsCaller> as(std::in_place, req);
  if (as->error()) return as->error();

  if (to_set & FUSE_SET_ATTR_MODE) {
    if (symlink) return EOPNOTSUPP;
    int rc = handle_fd >= 0 ? fchmod(handle_fd, attr->st_mode) : chmod(path.c_str(), attr->st_mode);
    if (rc != 0) return errno;
  }
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (symlink) return EINVAL;
    int rc = handle_fd >= 0 ? ftruncate(handle_fd, attr->st_size) : truncate(path.c_str(), attr->st_size);
    if (rc != 0) return errno;
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    struct timespec tv[2];
    tv[0].tv_nsec = UTIME_OMIT;
    tv[1].tv_nsec = UTIME_OMIT;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) tv[0].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_ATIME) tv[0] = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) tv[1].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_MTIME) tv[1] = attr->st_mtim;
    int rc;
    if (handle_fd >= 0) {
      rc = futimens(handle_fd, tv);
    } else if (symlink) {
      // A symlink cannot be reopened through /proc; name it in its parent.
      auto [parent, name] = inodes_.place_of(*inode);
      if (!parent || name.empty()) return ESTALE;
      NodeFd parent_fd = node_fd(parent);
      if (!parent_fd) return ESTALE;
      rc = utimensat(parent_fd.get(), name.c_str(), tv, AT_SYMLINK_NOFOLLOW);
    } else {
      rc = utimensat(AT_FDCWD, path.c_str(), tv, 0);
    }
    if (rc != 0) return errno;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  as.reset();  // the daemon's rights again for the accounting
  if (to_set & FUSE_SET_ATTR_SIZE) recharge(inode);
  // Setting the times is how many tools mark a cache hit (touch; Bazel's
  // disk cache does it without opening the file): a use of the artifact.
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) record_use(held.lease);
  fill_attr(*inode, st);
  fuse_reply_attr(req, &st, attr_timeout_);
  return 0;
}

int Filesystem::readlink(fuse_req_t req, fuse_ino_t ino) {
  InodePtr inode = inode_of(ino);
  if (!inode) return ESTALE;
  NodeFd fd = node_fd(inode);
  if (!fd) return errno == ESTALE ? ESTALE : ENOENT;
  char buf[PATH_MAX + 1];
  ssize_t n = readlinkat(fd.get(), "", buf, sizeof buf);
  if (n < 0) return errno;
  if (n >= static_cast<ssize_t>(sizeof buf)) return ENAMETOOLONG;
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
  return 0;
}

int Filesystem::statfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv;
  if (fstatvfs(data_fd_, &sv) != 0) return errno;
  // `df MOUNT` tells the truth about the quota: the size is the effective
  // limit, used is the cache's usage, available what is left of the limit
  // (never more than the backing filesystem has free). Without a limit
  // (size of the backing filesystem unknown) it is the backing filesystem's.
  if (quota_ && sv.f_frsize > 0) {
    const quota::QuotaManager::State q = quota_->state();
    if (q.limit != std::numeric_limits<std::uint64_t>::max()) {
      const std::uint64_t usage =
          static_cast<std::uint64_t>(std::max<std::int64_t>(0, index_.totals().usage.disk_bytes));
      const std::uint64_t block = sv.f_frsize;
      const std::uint64_t blocks = q.limit / block;
      const std::uint64_t used = std::min(blocks, (usage + block - 1) / block);
      sv.f_blocks = blocks;
      sv.f_bfree = blocks - used;
      sv.f_bavail = std::min<std::uint64_t>(sv.f_bfree, sv.f_bavail);
    }
  }
  fuse_reply_statfs(req, &sv);
  return 0;
}

}  // namespace artifactfs::fs

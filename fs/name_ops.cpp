// Names: unlink, rename (with RENAME_NOREPLACE and RENAME_EXCHANGE), link,
// symlink, mknod, and the helpers mkdir and rmdir share with them. Each runs
// under namespace_mutex_ so that the backing change and its accounting are
// one step (see filesystem.hpp).
//
// Rights and symlinks: every backing call here acts on one name in a
// directory held open by descriptor (no path is resolved), with the
// caller's credentials (AsCaller), so the backing filesystem checks the
// caller as the kernel did. None of these calls follows a final symlink
// (unlinkat, renameat2, mkdirat, symlinkat, mknodat and linkat's new name
// act on the name itself), and linkat's source is the inode's own
// descriptor.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <shared_mutex>

#include "fs/credentials.hpp"
#include "fs/filesystem.hpp"

namespace artifactfs::fs {

int Filesystem::hold(fuse_ino_t ino, Held& out) {
  out.inode = inode_of(ino);
  if (!out.inode) return ESTALE;
  out.lease = lease_for(*out.inode);
  if (!out.lease.valid()) return ENOENT;  // its artifact was evicted
  out.pinned = node_fd(out.inode);
  if (!out.pinned) return errno == ESTALE ? ESTALE : ENOENT;
  out.fd = out.pinned.get();
  return 0;
}

int Filesystem::remove_name(fuse_req_t req, fuse_ino_t parent_ino, const char* name, int flags) {
  Held parent;
  if (int err = hold(parent_ino, parent)) return err;
  std::lock_guard ns(namespace_mutex_);
  index::Index::Change change = mark_entry(*parent.inode, name);  // changed set (changes.cpp)
  {
    std::unique_lock ownership(ownership_mutex_);  // see accounting.cpp
    struct stat before;
    if (fstatat(parent.fd, name, &before, AT_SYMLINK_NOFOLLOW) != 0) return errno;
    {
      AsCaller as(req);
      if (as.error()) return as.error();
      if (unlinkat(parent.fd, name, flags) != 0) return errno;
    }
    watch_.record(parent.inode->ino);
    watch_.record(before.st_ino);  // its link count fell
    after_change("unlink", [&] {
      charge_unlinked(*parent.inode, name, before);
      inodes_.unlinked(parent.inode->ino, name, before.st_ino);
      forget_place(before);
    });
  }
  recharge(parent.inode);
  fuse_reply_err(req, 0);
  return 0;
}

void Filesystem::forget_place(const struct stat& removed) {
  // Its last name went: nothing is left to resolve. (A hard link that
  // loses its recorded name keeps its entry; looking it up under another
  // name records that one.)
  if (auto* nodes = inodes_.node_table(); nodes && (S_ISDIR(removed.st_mode) || removed.st_nlink <= 1)) {
    nodes->removed(removed.st_ino);
  }
}

int Filesystem::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  return remove_name(req, parent, name, 0);
}

int Filesystem::make_node(fuse_req_t req, fuse_ino_t parent_ino, const char* name,
                          const std::function<int(int)>& make) {
  Held parent;
  if (int err = hold(parent_ino, parent)) return err;
  if (int err = check_new_name(*parent.inode, name)) return err;
  std::unique_lock ns(namespace_mutex_);
  index::Index::Change change = mark_entry(*parent.inode, name);  // changed set (changes.cpp)
  auto make_as_caller = [&]() -> int {
    AsCaller as(req);
    if (as.error()) return as.error();
    return make(parent.fd) == 0 ? 0 : errno;
  };
  int err = make_as_caller();
  if (err == ENOSPC && quota_) {
    ns.unlock();  // make_room evicts, which takes namespace_mutex_
    bool freed = quota_->make_room(0);
    ns.lock();
    if (freed) err = make_as_caller();
  }
  if (err) return err;
  fuse_entry_param e;
  if (int lerr = finish_create(parent.inode, parent.fd, name, e, nullptr)) return lerr;
  ns.unlock();
  fuse_reply_entry(req, &e);
  return 0;
}

void Filesystem::PreWalk::start(Filesystem& fs, int dirfd, const char* entry, const Inode& parent,
                                const char* name, const Inode& new_parent, const char* new_name,
                                unsigned int flags) {
  struct stat st;
  if (fstatat(dirfd, entry, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) return;  // one entry: cheap
  bool needed = (flags & RENAME_EXCHANGE) ? fs.exchange_moves_between_artifacts(parent, name, new_parent, new_name)
                                          : fs.rename_moves_between_artifacts(parent, name, new_parent, new_name,
                                                                              st.st_mode);
  if (!needed) return;
  {
    std::lock_guard ns(fs.namespace_mutex_);
    ticket_ = fs.watch_.open();
  }
  // The daemon's rights: it reads the private store only, through the
  // directory held open, without following a symlink (tree_walk.hpp).
  try {
    entries_ = walk_subtree(dirfd, entry);
  } catch (const std::exception& e) {
    spdlog::debug("rename: walking {} before the namespace lock failed ({}); walking under it", entry, e.what());
    entries_ = {};  // check() closes the watch; walked() then gives null
  }
}

void Filesystem::PreWalk::check(NamespaceWatch& watch) {
  if (ticket_ == 0) return;
  valid_ = watch.close(ticket_, entries_);
  ticket_ = 0;
  if (valid_) {
    spdlog::debug("rename: walked {} entries before taking the namespace lock", entries_.size());
  } else {
    spdlog::debug("rename: names changed in a subtree of {} entries while it was walked; walking it again "
                  "under the namespace lock",
                  entries_.size());
    entries_ = {};
  }
}

const std::vector<SubtreeEntry>* Filesystem::PreWalk::walked(const struct stat& top) const {
  // The entry renamed must be the one walked.
  if (!valid_ || entries_.empty() || entries_.front().st.st_ino != top.st_ino) return nullptr;
  return &entries_;
}

int Filesystem::rename(fuse_req_t req, fuse_ino_t parent_ino, const char* name, fuse_ino_t new_parent_ino,
                       const char* new_name, unsigned int flags) {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;
  Held from, to;
  if (int err = hold(parent_ino, from)) return err;
  if (int err = hold(new_parent_ino, to)) return err;
  if (int err = check_new_name(*to.inode, new_name)) return err;
  const InodePtr& parent = from.inode;
  const InodePtr& new_parent = to.inode;
  const int parent_fd = from.fd;
  const int new_parent_fd = to.fd;

  // A move of a directory between artifacts walks the moved subtree. The
  // walk runs here, before namespace_mutex_, so that other names can change
  // meanwhile; under the mutex it is used only if no change touched it.
  PreWalk first, second;
  first.start(*this, parent_fd, name, *parent, name, *new_parent, new_name, flags);
  if (flags & RENAME_EXCHANGE) second.start(*this, new_parent_fd, new_name, *parent, name, *new_parent, new_name, flags);

  std::lock_guard ns(namespace_mutex_);
  first.check(watch_);
  second.check(watch_);
  index::Index::Change change = mark_entries(*parent, name, *new_parent, new_name);  // changed set (changes.cpp)
  {
    std::unique_lock ownership(ownership_mutex_);  // see accounting.cpp
    struct stat moved, replaced;
    if (fstatat(parent_fd, name, &moved, AT_SYMLINK_NOFOLLOW) != 0) return errno;
    bool target_exists = fstatat(new_parent_fd, new_name, &replaced, AT_SYMLINK_NOFOLLOW) == 0;
    if (target_exists && replaced.st_ino == moved.st_ino && !(flags & RENAME_EXCHANGE)) {
      // Two names of one inode: rename(2) does nothing and succeeds.
      fuse_reply_err(req, 0);
      return 0;
    }
    if (int err = check_renamed_keys(parent, name, new_parent, new_name, moved)) return err;
    {
      AsCaller as(req);
      if (as.error()) return as.error();
      if (renameat2(parent_fd, name, new_parent_fd, new_name, flags) != 0) return errno;
    }
    watch_.record(parent->ino);
    watch_.record(new_parent->ino);
    if (target_exists) watch_.record(replaced.st_ino);  // its link count fell (or names swapped)
    after_change("rename", [&] {
      if (flags & RENAME_EXCHANGE) {
        charge_exchanged(parent, name, moved, new_parent, new_name, replaced, first.walked(moved),
                         second.walked(replaced));
      } else {
        if (target_exists) {
          charge_unlinked(*new_parent, new_name, replaced);
          inodes_.unlinked(new_parent->ino, new_name, replaced.st_ino);
          forget_place(replaced);
        }
        charge_renamed(parent, name, new_parent, new_name, moved, first.walked(moved));
      }
    });
  }
  recharge(parent);
  if (new_parent != parent) recharge(new_parent);
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent_ino, const char* new_name) {
  Held source, target;
  if (int err = hold(ino, source)) return err;
  if (int err = hold(new_parent_ino, target)) return err;
  if (int err = check_new_name(*target.inode, new_name)) return err;
  const InodePtr& inode = source.inode;
  const InodePtr& new_parent = target.inode;
  const int fd = source.fd;
  const int new_parent_fd = target.fd;

  std::lock_guard ns(namespace_mutex_);
  index::Index::Change change = mark_entry(*new_parent, new_name);  // changed set (changes.cpp)
  {
    std::vector<index::Index::ChangeKey> source;  // and the source's owner: its link count
    add_inode_keys(source, *inode);
    change.add(source);
  }
  fuse_entry_param e;
  {
    std::unique_lock ownership(ownership_mutex_);  // see accounting.cpp
    struct stat before;
    if (fstat(fd, &before) != 0) return errno;
    {
      // As the caller: the backing filesystem applies protected_hardlinks
      // to the caller, not to root. linkat(AT_EMPTY_PATH) would need
      // CAP_DAC_READ_SEARCH; the inode's /proc link works for all.
      AsCaller as(req);
      if (as.error()) return as.error();
      if (linkat(AT_FDCWD, proc_path(fd).c_str(), new_parent_fd, new_name, AT_SYMLINK_FOLLOW) != 0) return errno;
    }
    // Undone if it cannot be registered, so that the tree and the kernel's
    // view never disagree.
    int err = 0;
    try {
      ensure_record(*new_parent, new_name, before.st_ino);
      err = do_lookup(new_parent, new_name, e);
      if (!err && e.ino == 0) err = ENOENT;
    } catch (...) {
      undo_new_entry(*new_parent, new_parent_fd, new_name, before.st_ino);
      throw;
    }
    if (err) {
      undo_new_entry(*new_parent, new_parent_fd, new_name, before.st_ino);
      return err;
    }
    watch_.record(new_parent->ino);
    watch_.record(before.st_ino);  // its link count rose
    after_change("link", [&] { charge_linked(*inode, before, *new_parent, new_name); });
  }
  recharge(new_parent);
  fuse_reply_entry(req, &e);
  return 0;
}

int Filesystem::symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  return make_node(req, parent, name, [&](int dirfd) { return symlinkat(target, dirfd, name); });
}

int Filesystem::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  return make_node(req, parent, name, [&](int dirfd) { return mknodat(dirfd, name, mode, rdev); });
}

}  // namespace artifactfs::fs

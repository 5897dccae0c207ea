// Names: unlink, rename (with RENAME_NOREPLACE and RENAME_EXCHANGE), link,
// symlink, mknod. Each runs under namespace_mutex_ so that the backing
// change and its accounting are one step (see filesystem.hpp).
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "fs/creds.hpp"
#include "fs/filesystem.hpp"

namespace artifactfs::fs {

int Filesystem::unlink(fuse_req_t req, fuse_ino_t parent_ino, const char* name) {
  InodePtr parent = inode_of(parent_ino);
  if (!parent) return ESTALE;
  Lease lease = lease_for(*parent);
  if (!lease.valid()) return ENOENT;
  int parent_fd = fd_of(parent);
  if (parent_fd < 0) return ENOENT;

  std::lock_guard ns(namespace_mutex_);
  struct stat before;
  if (fstatat(parent_fd, name, &before, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (unlinkat(parent_fd, name, 0) != 0) return errno;
  charge_unlinked(*parent, name, before);
  inodes_.unlinked(parent->ino, name, before.st_ino);
  recharge(parent);
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::rename(fuse_req_t req, fuse_ino_t parent_ino, const char* name, fuse_ino_t new_parent_ino,
                       const char* new_name, unsigned int flags) {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;
  InodePtr parent = inode_of(parent_ino);
  InodePtr new_parent = inode_of(new_parent_ino);
  if (!parent || !new_parent) return ESTALE;
  if (int err = check_new_name(*new_parent, new_name)) return err;
  Lease lease = lease_for(*parent);
  Lease new_lease = lease_for(*new_parent);
  if (!lease.valid() || !new_lease.valid()) return ENOENT;
  int parent_fd = fd_of(parent);
  int new_parent_fd = fd_of(new_parent);
  if (parent_fd < 0 || new_parent_fd < 0) return ENOENT;

  std::lock_guard ns(namespace_mutex_);
  struct stat moved, replaced;
  if (fstatat(parent_fd, name, &moved, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  bool target_exists = fstatat(new_parent_fd, new_name, &replaced, AT_SYMLINK_NOFOLLOW) == 0;
  if (target_exists && replaced.st_ino == moved.st_ino && !(flags & RENAME_EXCHANGE)) {
    // Two names of one inode: rename(2) does nothing and succeeds.
    fuse_reply_err(req, 0);
    return 0;
  }
  if (renameat2(parent_fd, name, new_parent_fd, new_name, flags) != 0) return errno;

  if (flags & RENAME_EXCHANGE) {
    charge_exchanged(parent, name, moved, new_parent, new_name, replaced);
  } else {
    if (target_exists) {
      charge_unlinked(*new_parent, new_name, replaced);
      inodes_.unlinked(new_parent->ino, new_name, replaced.st_ino);
    }
    charge_renamed(parent, name, new_parent, new_name, moved);
  }
  recharge(parent);
  if (new_parent != parent) recharge(new_parent);
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent_ino, const char* new_name) {
  InodePtr inode = inode_of(ino);
  InodePtr new_parent = inode_of(new_parent_ino);
  if (!inode || !new_parent) return ESTALE;
  if (int err = check_new_name(*new_parent, new_name)) return err;
  Lease lease = lease_for(*new_parent);
  if (!lease.valid()) return ENOENT;
  int fd = fd_of(inode);
  int new_parent_fd = fd_of(new_parent);
  if (fd < 0 || new_parent_fd < 0) return ENOENT;

  std::lock_guard ns(namespace_mutex_);
  struct stat before;
  if (fstat(fd, &before) != 0) return errno;
  // linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH; /proc works for all.
  if (linkat(AT_FDCWD, proc_path(fd).c_str(), new_parent_fd, new_name, AT_SYMLINK_FOLLOW) != 0) return errno;
  ensure_record(*new_parent, new_name);
  fuse_entry_param e;
  int err = do_lookup(new_parent, new_name, e);
  if (err) return err;
  charge_linked(*inode, before, *new_parent, new_name);
  recharge(new_parent);
  fuse_reply_entry(req, &e);
  return 0;
}

int Filesystem::symlink(fuse_req_t req, const char* target, fuse_ino_t parent_ino, const char* name) {
  InodePtr parent = inode_of(parent_ino);
  if (!parent) return ESTALE;
  if (int err = check_new_name(*parent, name)) return err;
  Lease lease = lease_for(*parent);
  if (!lease.valid()) return ENOENT;
  int parent_fd = fd_of(parent);
  if (parent_fd < 0) return ENOENT;

  std::lock_guard ns(namespace_mutex_);
  if (symlinkat(target, parent_fd, name) != 0) return errno;
  set_owner(req, parent_fd, name);
  fuse_entry_param e;
  int err = finish_create(parent, name, e, nullptr);
  if (err) return err;
  fuse_reply_entry(req, &e);
  return 0;
}

int Filesystem::mknod(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode, dev_t rdev) {
  InodePtr parent = inode_of(parent_ino);
  if (!parent) return ESTALE;
  if (int err = check_new_name(*parent, name)) return err;
  Lease lease = lease_for(*parent);
  if (!lease.valid()) return ENOENT;
  int parent_fd = fd_of(parent);
  if (parent_fd < 0) return ENOENT;

  std::lock_guard ns(namespace_mutex_);
  if (mknodat(parent_fd, name, mode, rdev) != 0) return errno;
  set_owner(req, parent_fd, name);
  fuse_entry_param e;
  int err = finish_create(parent, name, e, nullptr);
  if (err) return err;
  fuse_reply_entry(req, &e);
  return 0;
}

}  // namespace artifactfs::fs

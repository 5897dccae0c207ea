// Open files: open, create, read, write, flush, release, fsync, fallocate,
// lseek. The hot path is open and read: an open records the access in
// memory (no LMDB write) and reads are answered from the backing fd by
// splice where the kernel allows. Concurrency: see filesystem.hpp.
#include <fcntl.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

#include "fs/credentials.hpp"
#include "fs/filesystem.hpp"
#include "fs/handle.hpp"
#include "fs/uring_transport.hpp"

namespace artifactfs::fs {

// Memory only: the flush thread commits it (see index.hpp).
void Filesystem::record_use(const Lease& lease) {
  if (!lease.artifact()) return;
  const index::TimeNs now = now_ns();
  index_.record_access(lease.artifact()->id, now);
  index_.count(index::Stat::hits);
  lease.artifact()->last_use_ns.store(now, std::memory_order_relaxed);
}

void Filesystem::track_handle(HandleUse& use, const InodePtr& inode, const Lease& lease) {
  if (lease.artifact()) long_held_.add(use, inode, now_ns());
}

void Filesystem::note_read(HandleUse& use, const Lease& lease) {
  if (!use.list) return;
  if (use.inode->pages_dropped.load(std::memory_order_relaxed)) {
    use.inode->pages_dropped.store(false, std::memory_order_relaxed);
  }
  const index::TimeNs now = now_ns();
  index::TimeNs last = use.last_use_ns.load(std::memory_order_relaxed);
  // One use per flush interval and handle, however many reads: the
  // exchange lets one of concurrent reads record it.
  if (now - last >= flush_interval_ns_ && use.last_use_ns.compare_exchange_strong(last, now)) record_use(lease);
}

namespace {

// The CREATE of a name that exists (the kernel sends CREATE for a name it
// holds no entry for, without O_EXCL): opens it only if it is a regular
// file, without following a symlink. Runs with the caller's credentials.
int open_existing_file(int parent_fd, const char* name, int flags) {
  int path_fd = openat(parent_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (path_fd < 0) return -1;
  struct stat st;
  int err = 0;
  if (fstat(path_fd, &st) != 0) err = errno;
  else if (S_ISLNK(st.st_mode)) err = ELOOP;
  else if (S_ISDIR(st.st_mode)) err = EISDIR;
  else if (!S_ISREG(st.st_mode)) err = EEXIST;
  int fd = err ? -1 : reopen_inode(path_fd, flags);
  if (fd < 0 && !err) err = errno;
  close(path_fd);
  errno = err;
  return fd;
}

// Whether an open with these flags may share the inode's cached read-only
// description (InodeTable::open_for_reading): read-only, and no flag that
// lives in the description and changes what reads do. (Flags such as
// O_NONBLOCK mean nothing for a regular file; the kernel's O_LARGEFILE,
// always set, is not glibc's, which is 0 on 64-bit systems.)
bool shares_read_description(int flags) {
  return (flags & O_ACCMODE) == O_RDONLY && !(flags & (O_DIRECT | O_NOATIME | O_SYNC | O_DSYNC | O_TRUNC));
}

}  // namespace

int Filesystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Held held;
  if (int err = hold(ino, held)) return err;  // ENOENT if evicted: the open lost the race
  const InodePtr& inode = held.inode;
  // The kernel opens special files itself and follows symlinks before it
  // asks; anything else here was not meant to be opened.
  if (!S_ISREG(inode->type)) return EACCES;

  int flags = fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  int fd;
  index::Index::Change change;  // changed set (changes.cpp): before the data changes
  if (flags & O_TRUNC) {
    change = mark_inode(*inode);
    // Truncation changes data: the backing filesystem checks the caller too.
    AsCaller as(req);
    if (as.error()) return as.error();
    fd = reopen_inode(held.fd, flags);
  } else if (shares_read_description(flags)) {
    // The kernel checked the caller's access (default_permissions).
    fd = inodes_.open_for_reading(inode, held.pinned);
  } else {
    fd = reopen_inode(held.fd, flags);  // the kernel checked the caller's access (default_permissions)
  }
  if (fd < 0) return errno;

  auto handle = std::make_unique<Handle>();
  handle->fd = fd;
  handle->writable = (flags & O_ACCMODE) != O_RDONLY;
  handle->inode = inode;
  record_use(held.lease);
  track_handle(handle->use, inode, held.lease);
  handle->lease = std::move(held.lease);
  if (flags & O_TRUNC) recharge(inode, fd);

  // Every change to the data goes through this mount, so the kernel's page
  // cache stays valid across opens.
  fi->keep_cache = 1;
  // A FLUSH round trip is only needed where a close can change data.
  fi->noflush = !handle->writable;
  fi->fh = reinterpret_cast<std::uint64_t>(handle.release());
  if (fuse_reply_open(req, fi) != 0) {
    // The opener was interrupted; the kernel will not send a release.
    std::unique_ptr<Handle> orphan(Handle::of(fi));
    close(orphan->fd);
  }
  return 0;
}

int Filesystem::create(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode, fuse_file_info* fi) {
  Held changing;
  if (int err = hold(parent_ino, changing)) return err;
  const InodePtr& parent = changing.inode;
  const int parent_fd = changing.fd;
  if (int err = check_new_name(*parent, name)) return err;
  // Before the namespace lock: making room evicts, which takes it.
  if (quota_) {
    if (int err = quota_->admit_write(0)) return err;
  }

  std::unique_lock ns(namespace_mutex_);
  index::Index::Change change = mark_entry(*parent, name);  // changed set (changes.cpp)
  int flags = (fi->flags | O_CREAT) & ~(O_NOCTTY | O_NOFOLLOW);
  // Only a file this call really creates is new usage: without O_EXCL the
  // kernel may send CREATE for a name that exists.
  bool created = true;
  int fd = -1;
  int err = 0;
  for (int attempt = 0;; ++attempt) {
    {
      // The caller's rights, and never through a symlink: O_EXCL does not
      // follow one, and the retry opens only a regular file.
      AsCaller as(req);
      if (as.error()) return as.error();
      fd = openat(parent_fd, name, flags | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
      if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
        created = false;
        fd = open_existing_file(parent_fd, name, flags & ~O_CREAT);
      }
      err = fd < 0 ? errno : 0;
    }
    if (fd >= 0 || err != ENOSPC || attempt > 0 || !quota_) break;
    ns.unlock();
    bool freed = quota_->make_room(0);
    ns.lock();
    if (!freed) break;
  }
  if (fd < 0) return err;

  fuse_entry_param e;
  InodePtr inode;
  err = created ? finish_create(parent, parent_fd, name, e, &inode) : do_lookup(parent, name, e, &inode);
  if (err || !inode) {
    close(fd);
    return err ? err : ENOENT;  // the name went away meanwhile
  }
  if (!created && (flags & O_TRUNC)) recharge(inode, fd);
  ns.unlock();

  auto handle = std::make_unique<Handle>();
  handle->fd = fd;
  handle->writable = true;
  handle->inode = inode;
  handle->lease = lease_for(*inode);
  record_use(handle->lease);
  track_handle(handle->use, inode, handle->lease);
  fi->keep_cache = 1;
  fi->fh = reinterpret_cast<std::uint64_t>(handle.release());
  if (fuse_reply_create(req, &e, fi) != 0) {
    std::unique_ptr<Handle> orphan(Handle::of(fi));
    close(orphan->fd);
  }
  return 0;
}

int Filesystem::read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  Handle* handle = Handle::of(fi);
  note_read(handle->use, handle->lease);
  // On a ring: read straight into the ring entry (uring_transport.hpp).
  if (char* space = UringTransport::reply_space(size)) {
    size_t got = 0;
    while (got < size) {
      ssize_t n = pread(handle->fd, space + got, size - got, off + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    fuse_reply_buf(req, space, got);
    return 0;
  }
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = handle->fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  return 0;
}

int Filesystem::write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  Handle* handle = Handle::of(fi);
  size_t size = fuse_buf_size(in);
  // Room first if this write would take usage over the limit (quota_manager.hpp).
  if (quota_) {
    if (int err = quota_->admit_write(size)) return err;
  }
  index::Index::Change change = mark_inode(*handle->inode);  // changed set (changes.cpp)
  ssize_t written = -1;
  for (int attempt = 0;; ++attempt) {
    fuse_bufvec out = FUSE_BUFVEC_INIT(size);
    out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = handle->fd;
    out.buf[0].pos = off;
    written = fuse_buf_copy(&out, in, FUSE_BUF_SPLICE_NONBLOCK);
    if (written != -ENOSPC || attempt > 0 || !quota_ || !quota_->make_room(size)) break;
    in->idx = 0;
    in->off = 0;
  }
  if (written < 0) return static_cast<int>(-written);
  recharge(handle->inode, handle->fd);
  fuse_reply_write(req, static_cast<size_t>(written));
  return 0;
}

int Filesystem::flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // Closing a duplicate reports deferred write errors (NFS-style backing
  // stores) at close(), as the caller expects.
  int dup_fd = dup(Handle::of(fi)->fd);
  if (dup_fd < 0) return errno;
  if (close(dup_fd) != 0) return errno;
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<Handle> handle(Handle::of(fi));
  if (handle->writable) recharge(handle->inode, handle->fd);
  close(handle->fd);
  handle.reset();  // drops the lease before the reply: the artifact may now be evicted
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = Handle::of(fi)->fd;
  if ((datasync ? fdatasync(fd) : ::fsync(fd)) != 0) return errno;
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  Handle* handle = Handle::of(fi);
  if (quota_ && !(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE))) {
    if (int err = quota_->admit_write(static_cast<std::uint64_t>(length))) return err;
  }
  index::Index::Change change = mark_inode(*handle->inode);  // changed set (changes.cpp)
  int rc = ::fallocate(handle->fd, mode, offset, length);
  if (rc != 0 && errno == ENOSPC && quota_ && quota_->make_room(static_cast<std::uint64_t>(length))) {
    rc = ::fallocate(handle->fd, mode, offset, length);
  }
  if (rc != 0) return errno;
  recharge(handle->inode, handle->fd);
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  off_t result = ::lseek(Handle::of(fi)->fd, off, whence);
  if (result < 0) return errno;
  fuse_reply_lseek(req, result);
  return 0;
}

}  // namespace artifactfs::fs

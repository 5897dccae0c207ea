// Open files: open, create, read, write, flush, release, fsync, fallocate,
// lseek. The hot path is open and read: an open records the access in
// memory (no LMDB write) and reads are answered from the backing fd by
// splice where the kernel allows. Concurrency: see filesystem.hpp.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

#include "fs/creds.hpp"
#include "fs/filesystem.hpp"
#include "fs/handle.hpp"

namespace artifactfs::fs {

// Memory only: the flush thread commits it (see index.hpp).
void Filesystem::record_use(const Lease& lease) {
  if (!lease.artifact()) return;
  index_.record_access(lease.artifact()->id, now_ns());
  index_.count(index::Stat::hits);
}

int Filesystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Held held;
  if (int err = hold(ino, held)) return err;  // ENOENT if evicted: the open lost the race
  const InodePtr& inode = held.inode;
  const int path_fd = held.fd;

  int flags = fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  int fd = ::open(proc_path(path_fd).c_str(), flags | O_CLOEXEC);
  if (fd < 0) return errno;

  auto handle = std::make_unique<Handle>();
  handle->fd = fd;
  handle->writable = (flags & O_ACCMODE) != O_RDONLY;
  handle->inode = inode;
  record_use(held.lease);
  handle->lease = std::move(held.lease);
  if (flags & O_TRUNC) recharge(inode);

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

  std::unique_lock ns(namespace_mutex_);
  int flags = (fi->flags | O_CREAT) & ~(O_NOCTTY | O_NOFOLLOW);
  // Only a file this call really creates is new usage: without O_EXCL the
  // kernel may send CREATE for a name that exists.
  bool created = true;
  int fd = -1;
  for (int attempt = 0;; ++attempt) {
    fd = openat(parent_fd, name, flags | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
      created = false;
      fd = openat(parent_fd, name, (flags & ~O_CREAT) | O_CLOEXEC);
    }
    if (fd >= 0 || errno != ENOSPC || attempt > 0 || !quota_) break;
    ns.unlock();
    bool freed = quota_->make_room(0);
    ns.lock();
    if (!freed) {
      errno = ENOSPC;
      break;
    }
  }
  if (fd < 0) return errno;
  if (created) set_owner(req, parent_fd, name);

  fuse_entry_param e;
  InodePtr inode;
  int err = created ? finish_create(parent, name, e, &inode) : do_lookup(parent, name, e, &inode);
  if (err || !inode) {
    close(fd);
    return err ? err : EIO;
  }
  if (!created && (flags & O_TRUNC)) recharge(inode);
  ns.unlock();

  auto handle = std::make_unique<Handle>();
  handle->fd = fd;
  handle->writable = true;
  handle->inode = inode;
  handle->lease = lease_for(*inode);
  record_use(handle->lease);
  fi->keep_cache = 1;
  fi->fh = reinterpret_cast<std::uint64_t>(handle.release());
  if (fuse_reply_create(req, &e, fi) != 0) {
    std::unique_ptr<Handle> orphan(Handle::of(fi));
    close(orphan->fd);
  }
  return 0;
}

int Filesystem::read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = Handle::of(fi)->fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  return 0;
}

int Filesystem::write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  Handle* handle = Handle::of(fi);
  size_t size = fuse_buf_size(in);
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
  recharge(handle->inode);
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
  if (handle->writable) recharge(handle->inode);
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
  int rc = ::fallocate(handle->fd, mode, offset, length);
  if (rc != 0 && errno == ENOSPC && quota_ && quota_->make_room(static_cast<std::uint64_t>(length))) {
    rc = ::fallocate(handle->fd, mode, offset, length);
  }
  if (rc != 0) return errno;
  recharge(handle->inode);
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

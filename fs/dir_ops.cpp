// Directories: opendir, readdir and readdirplus, releasedir, fsyncdir,
// mkdir, rmdir. Concurrency: see filesystem.hpp; a DirHandle has its own
// mutex because readdir calls on one handle may arrive on several threads.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <vector>

#include "fs/filesystem.hpp"
#include "fs/handle.hpp"

namespace artifactfs::fs {

int Filesystem::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Held held;
  if (int err = hold(ino, held)) return err;
  const InodePtr& inode = held.inode;
  const int path_fd = held.fd;
  int fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  auto handle = std::make_unique<DirHandle>();
  handle->dir = fdopendir(fd);
  if (!handle->dir) {
    int err = errno;
    close(fd);
    return err;
  }
  handle->inode = inode;
  record_use(held.lease);
  track_handle(handle->use, inode, held.lease);
  handle->lease = std::move(held.lease);
  // Listings may be cached by the kernel: changes through the mount update
  // that cache, and evictions invalidate it (Notifier::contents_changed).
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  fi->fh = reinterpret_cast<std::uint64_t>(handle.release());
  if (fuse_reply_open(req, fi) != 0) {
    std::unique_ptr<DirHandle> orphan(DirHandle::of(fi));
    closedir(orphan->dir);
  }
  return 0;
}

int Filesystem::readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  DirHandle* d = DirHandle::of(fi);
  note_read(d->use, d->lease);
  std::vector<char> buf(size);
  size_t used = 0;
  int err = 0;
  {
    std::lock_guard lock(d->mutex);
    if (off != d->offset) {
      seekdir(d->dir, off);
      d->entry = nullptr;
      d->offset = off;
    }
    for (;;) {
      if (!d->entry) {
        errno = 0;
        d->entry = ::readdir(d->dir);
        if (!d->entry) {
          err = errno;
          break;
        }
      }
      const char* name = d->entry->d_name;
      off_t next = d->entry->d_off;
      size_t entsize;
      if (plus) {
        fuse_entry_param e;
        bool dots = std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
        if (dots) {
          // The kernel does not look these up; no reference is taken.
          std::memset(&e, 0, sizeof e);
          e.attr.st_ino = d->entry->d_ino;
          e.attr.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
        } else {
          int lerr = do_lookup(d->inode, name, e);
          if (lerr || e.ino == 0) {  // vanished since readdir saw it
            d->entry = nullptr;
            d->offset = next;
            continue;
          }
        }
        entsize = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
        if (entsize > size - used) {
          if (!dots) forget(e.ino, 1);  // did not fit: the kernel never saw it
          break;
        }
      } else {
        struct stat st {};
        st.st_ino = d->entry->d_ino;
        st.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
        entsize = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
        if (entsize > size - used) break;
      }
      used += entsize;
      d->entry = nullptr;
      d->offset = next;
    }
  }
  // An error after some entries were returned is reported by the next call.
  if (err && used == 0) return err;
  fuse_reply_buf(req, buf.data(), used);
  return 0;
}

int Filesystem::releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<DirHandle> d(DirHandle::of(fi));
  closedir(d->dir);
  d.reset();
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = dirfd(DirHandle::of(fi)->dir);
  if ((datasync ? fdatasync(fd) : ::fsync(fd)) != 0) return errno;
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  return make_node(req, parent, name, [&](int dirfd) { return mkdirat(dirfd, name, mode); });
}

int Filesystem::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  return remove_name(req, parent, name, AT_REMOVEDIR);
}

}  // namespace artifactfs::fs

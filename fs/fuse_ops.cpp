// The one boundary between libfuse and the Filesystem: each trampoline runs
// the operation, and replies with an errno if the operation did not reply
// itself or threw. Also negotiates the connection's capabilities.
#include "fs/fuse_ops.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <new>

#include "fs/filesystem.hpp"
#include "index/index.hpp"

namespace artifactfs::fs {

namespace {

Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

template <typename Op>
void run(fuse_req_t req, const char* what, Op&& op) {
  int err;
  try {
    err = op(fs_of(req));
    // Per-operation tracing costs one level check unless enabled.
    if (spdlog::should_log(spdlog::level::debug)) {
      const fuse_ctx* ctx = fuse_req_ctx(req);
      spdlog::debug("{} by pid {} uid {}: {}", what, ctx->pid, ctx->uid, err ? std::strerror(err) : "ok");
    }
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  } catch (const index::IndexError& e) {
    spdlog::error("{}: index error: {}", what, e.what());
    err = EIO;
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", what, e.what());
    err = EIO;
  }
  if (err != 0) fuse_reply_err(req, err);
}

}  // namespace

void Filesystem::init(fuse_conn_info* conn) {
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_EXPORT_SUPPORT);  // NFS: node ids resolvable after forget
  want(FUSE_CAP_SPLICE_READ);
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_MOVE);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_READDIRPLUS_AUTO);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_ATOMIC_O_TRUNC);
  // POSIX and BSD locks are left to the kernel, which applies them to every
  // process using this mount: the backing files have no other users.
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  // Artifacts are written once and read many times: large requests.
  conn->max_write = kMaxWrite;
  conn->max_readahead = 1u << 20;
  conn->max_background = 64;
}

const fuse_lowlevel_ops& operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = [](void* userdata, fuse_conn_info* conn) { static_cast<Filesystem*>(userdata)->init(conn); };
    o.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      run(req, "lookup", [&](Filesystem& fs) { return fs.lookup(req, parent, name); });
    };
    o.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
      fs_of(req).forget(ino, nlookup);
      fuse_reply_none(req);
    };
    o.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
      for (size_t i = 0; i < count; ++i) fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
      fuse_reply_none(req);
    };
    o.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
      run(req, "getattr", [&](Filesystem& fs) { return fs.getattr(req, ino); });
    };
    o.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
      run(req, "setattr", [&](Filesystem& fs) { return fs.setattr(req, ino, attr, to_set, fi); });
    };
    o.readlink = [](fuse_req_t req, fuse_ino_t ino) {
      run(req, "readlink", [&](Filesystem& fs) { return fs.readlink(req, ino); });
    };
    o.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
      run(req, "mknod", [&](Filesystem& fs) { return fs.mknod(req, parent, name, mode, rdev); });
    };
    o.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
      run(req, "mkdir", [&](Filesystem& fs) { return fs.mkdir(req, parent, name, mode); });
    };
    o.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      run(req, "unlink", [&](Filesystem& fs) { return fs.unlink(req, parent, name); });
    };
    o.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      run(req, "rmdir", [&](Filesystem& fs) { return fs.rmdir(req, parent, name); });
    };
    o.symlink = [](fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
      run(req, "symlink", [&](Filesystem& fs) { return fs.symlink(req, target, parent, name); });
    };
    o.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent, const char* new_name,
                  unsigned int flags) {
      run(req, "rename", [&](Filesystem& fs) { return fs.rename(req, parent, name, new_parent, new_name, flags); });
    };
    o.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
      run(req, "link", [&](Filesystem& fs) { return fs.link(req, ino, new_parent, new_name); });
    };
    o.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      run(req, "open", [&](Filesystem& fs) { return fs.open(req, ino, fi); });
    };
    o.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
      run(req, "read", [&](Filesystem& fs) { return fs.read(req, ino, size, off, fi); });
    };
    o.write_buf = [](fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
      run(req, "write", [&](Filesystem& fs) { return fs.write_buf(req, ino, in, off, fi); });
    };
    o.flush = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      run(req, "flush", [&](Filesystem& fs) { return fs.flush(req, ino, fi); });
    };
    o.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      run(req, "release", [&](Filesystem& fs) { return fs.release(req, ino, fi); });
    };
    o.fsync = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
      run(req, "fsync", [&](Filesystem& fs) { return fs.fsync(req, ino, datasync, fi); });
    };
    o.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      run(req, "opendir", [&](Filesystem& fs) { return fs.opendir(req, ino, fi); });
    };
    o.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
      run(req, "readdir", [&](Filesystem& fs) { return fs.readdir(req, ino, size, off, fi, false); });
    };
    o.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
      run(req, "readdirplus", [&](Filesystem& fs) { return fs.readdir(req, ino, size, off, fi, true); });
    };
    o.releasedir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      run(req, "releasedir", [&](Filesystem& fs) { return fs.releasedir(req, ino, fi); });
    };
    o.fsyncdir = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
      run(req, "fsyncdir", [&](Filesystem& fs) { return fs.fsyncdir(req, ino, datasync, fi); });
    };
    o.statfs = [](fuse_req_t req, fuse_ino_t ino) {
      run(req, "statfs", [&](Filesystem& fs) { return fs.statfs(req, ino); });
    };
    o.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
      run(req, "setxattr", [&](Filesystem& fs) { return fs.setxattr(req, ino, name, value, size, flags); });
    };
    o.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
      run(req, "getxattr", [&](Filesystem& fs) { return fs.getxattr(req, ino, name, size); });
    };
    o.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
      run(req, "listxattr", [&](Filesystem& fs) { return fs.listxattr(req, ino, size); });
    };
    o.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
      run(req, "removexattr", [&](Filesystem& fs) { return fs.removexattr(req, ino, name); });
    };
    o.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
      run(req, "create", [&](Filesystem& fs) { return fs.create(req, parent, name, mode, fi); });
    };
    o.fallocate = [](fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info* fi) {
      run(req, "fallocate", [&](Filesystem& fs) { return fs.fallocate(req, ino, mode, offset, length, fi); });
    };
    o.lseek = [](fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
      run(req, "lseek", [&](Filesystem& fs) { return fs.lseek(req, ino, off, whence, fi); });
    };
    return o;
  }();
  return ops;
}

}  // namespace artifactfs::fs

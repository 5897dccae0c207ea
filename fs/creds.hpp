// Ownership of new entries. The daemon usually runs as root so that every
// user can share the cache (allow_other with default_permissions); a new
// entry must then belong to the caller, not to root.
#pragma once

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

namespace artifactfs::fs {

inline void set_owner(fuse_req_t req, int parent_fd, const char* name) {
  if (geteuid() != 0) return;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 && ctx->gid == 0) return;
  struct stat parent;
  gid_t gid = ctx->gid;
  // A set-group-ID directory hands its group down, as on a local disk.
  if (fstat(parent_fd, &parent) == 0 && (parent.st_mode & S_ISGID)) gid = static_cast<gid_t>(-1);
  (void)fchownat(parent_fd, name, ctx->uid, gid, AT_SYMLINK_NOFOLLOW);
}

}  // namespace artifactfs::fs

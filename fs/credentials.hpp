// The caller's rights for one backing call.
//
// The daemon runs as root with allow_other so that every user (and an NFS
// server) shares one cache. The kernel checks each request against the
// mount's attributes (default_permissions), but a call the daemon makes by
// name with root's rights could still reach what the caller may not: a
// file a symlink points to, a name in a directory the caller cannot write.
// So every call that creates, opens with O_CREAT or O_TRUNC, links, renames,
// removes or changes attributes runs with the caller's filesystem uid, gid
// and supplementary groups, and the backing filesystem checks the caller
// too. New entries then belong to the caller from their first instant; the
// daemon's umask is 0 (the kernel already applied the caller's).
//
// CONCURRENCY MODEL
// Credentials are per thread: setfsuid and setfsgid act on the calling
// thread only, and groups are set with the raw setgroups system call (glibc's
// setgroups would apply them to every thread of the process). An AsCaller
// lives on one worker thread's stack for the duration of a few system calls
// and restores the daemon's credentials when it goes, before the thread
// serves anything else. No locks.
//
// Changing fsuid from 0 drops the filesystem capabilities (CAP_DAC_OVERRIDE,
// CAP_FOWNER, CAP_CHOWN, ...) from the thread's effective set; changing it
// back to 0 restores them from the permitted set. CAP_SETUID and CAP_SETGID,
// which the switch back needs, are not filesystem capabilities and stay.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <vector>

namespace artifactfs::fs {

class AsCaller {
 public:
  // Switches this thread to the credentials of the request's caller (a no-op
  // when the daemon is not root, or the caller is root in group root).
  explicit AsCaller(fuse_req_t req);
  ~AsCaller();
  AsCaller(const AsCaller&) = delete;
  AsCaller& operator=(const AsCaller&) = delete;

  // 0, or the errno that kept the switch from happening: the caller must
  // then not make the call (acting as root instead would be the bug this
  // class exists to prevent).
  int error() const { return error_; }

 private:
  bool switched_ = false;
  int error_ = 0;
};

// The supplementary groups of a request's caller (from /proc; empty if the
// caller is gone).
std::vector<gid_t> caller_groups(fuse_req_t req);

// Records the daemon's own groups so that AsCaller can restore them. Called
// once at start-up, before any worker thread exists; also sets umask 0.
void init_credentials();

}  // namespace artifactfs::fs

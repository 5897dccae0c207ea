// See credentials.hpp.
#include "fs/credentials.hpp"

#include <grp.h>
#include <spdlog/spdlog.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

namespace artifactfs::fs {

namespace {

// The daemon's own credentials, recorded by init_credentials().
std::vector<gid_t> daemon_groups;
uid_t daemon_fsuid = 0;
gid_t daemon_fsgid = 0;

int set_thread_groups(const std::vector<gid_t>& groups) {
  // The raw system call: per thread, unlike glibc's setgroups.
  return static_cast<int>(syscall(SYS_setgroups, groups.size(), groups.empty() ? nullptr : groups.data()));
}

// setfsuid/setfsgid report no errors; reading the value back does.
bool set_fsuid(uid_t uid) {
  setfsuid(uid);
  return static_cast<uid_t>(setfsuid(static_cast<uid_t>(-1))) == uid;
}
bool set_fsgid(gid_t gid) {
  setfsgid(gid);
  return static_cast<gid_t>(setfsgid(static_cast<gid_t>(-1))) == gid;
}

}  // namespace

void init_credentials() {
  umask(0);
  daemon_fsuid = geteuid();
  daemon_fsgid = getegid();
  int n = getgroups(0, nullptr);
  if (n > 0) {
    daemon_groups.resize(static_cast<size_t>(n));
    n = getgroups(n, daemon_groups.data());
    daemon_groups.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
}

std::vector<gid_t> caller_groups(fuse_req_t req) {
  std::vector<gid_t> groups(32);
  for (;;) {
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n < 0) return {};  // the caller exited, or /proc is not there
    if (static_cast<size_t>(n) <= groups.size()) {
      groups.resize(static_cast<size_t>(n));
      return groups;
    }
    groups.resize(static_cast<size_t>(n));
  }
}

AsCaller::AsCaller(fuse_req_t req) {
  if (daemon_fsuid != 0) return;  // an unprivileged daemon only has its own rights
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 && ctx->gid == 0) return;
  switched_ = true;
  // Groups and gid first: once fsuid is not 0 the thread still has
  // CAP_SETGID, but this order never has a moment with the caller's uid and
  // root's groups.
  if (set_thread_groups(caller_groups(req)) != 0 || !set_fsgid(ctx->gid) || !set_fsuid(ctx->uid)) {
    error_ = errno ? errno : EPERM;
    spdlog::error("cannot take the credentials of uid {} gid {}: refusing the request", ctx->uid, ctx->gid);
  }
}

AsCaller::~AsCaller() {
  if (!switched_) return;
  bool restored = set_fsuid(daemon_fsuid) && set_fsgid(daemon_fsgid) && set_thread_groups(daemon_groups) == 0;
  if (!restored) {
    // A worker thread with someone else's rights would act wrongly for every
    // later request: stop rather than go on.
    spdlog::critical("cannot restore the daemon's credentials on a worker thread; aborting");
    std::abort();
  }
}

}  // namespace artifactfs::fs

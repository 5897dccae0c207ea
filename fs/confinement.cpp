// See confinement.hpp for what is confined, why, and the concurrency model.
#include "fs/confinement.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

namespace artifactfs::fs {

namespace fsys = std::filesystem;

namespace {

// Directories emptied in the namespace, as PrivateTmp= and ProtectHome= do.
constexpr const char* kHidden[] = {"/tmp", "/var/tmp", "/home", "/root", "/run/user"};

std::string failed(const std::string& what) { return what + ": " + std::strerror(errno); }

bool within(const fsys::path& path, const fsys::path& dir) {
  auto [d, p] = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return d == dir.end();
}

fsys::path resolved(const fsys::path& path) {
  std::error_code ec;
  fsys::path out = fsys::weakly_canonical(fsys::absolute(path), ec);
  return ec ? fsys::absolute(path) : out;
}

// The unmounter's whole life, in the forked child: only async-signal-safe
// calls. Exits 0 after unmounting, an errno value if the unmount failed, 0
// without unmounting when the daemon closed the pipe without asking.
[[noreturn]] void run_unmounter(int request_fd, const char* mountpoint) {
  // A Ctrl-C or a stop signal meant for the daemon must not end it first.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ignore, nullptr);
  sigaction(SIGTERM, &ignore, nullptr);
  sigaction(SIGHUP, &ignore, nullptr);
  prctl(PR_SET_NAME, "afs-unmounter");
  // Nothing else of the daemon's: above all not /dev/fuse, which would keep
  // a dead daemon's connection alive, nor its standard streams, which would
  // keep whoever reads them (mount(8), a shell's pipe) waiting for the end.
  if (dup2(request_fd, 3) < 0) _exit(EBADF);
  close_range(4, ~0U, 0);
  int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 3) close(null);
  }
  char request = 0;
  ssize_t n;
  do {
    n = read(3, &request, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) _exit(0);
  _exit(umount2(mountpoint, MNT_DETACH) == 0 ? 0 : (errno & 0xff));
}

// Sets or clears mount attributes of the mount at `path` and all below it.
void set_attributes(const char* path, std::uint64_t set, std::uint64_t clear) {
  struct mount_attr attr {};
  attr.attr_set = set;
  attr.attr_clr = clear;
  if (mount_setattr(AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) != 0) {
    throw ConfinementError(failed(std::string("mount_setattr of ") + path));
  }
}

// The namespace's mounts, made once the daemon is in it. Returns what was
// hidden.
std::string arrange_namespace(const ConfinementPlan& plan, const fsys::path& store, const std::string& mountpoint) {
  // First of all: nothing done here may reach the host.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    throw ConfinementError(failed("making every mount a slave of the host's"));
  }
  // The namespace's copy of our own mount goes: it would keep the FUSE
  // connection alive after the host's mount is unmounted (where the host's
  // mounts do not propagate, nothing else removes it), and the daemon never
  // uses its own mount.
  if (umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
    throw ConfinementError(failed("unmounting the namespace's copy of " + mountpoint));
  }
  std::string hidden;
  for (const char* dir : kHidden) {
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) continue;  // absent, or a symlink to elsewhere
    bool needed = within(store, dir);
    for (const auto& path : plan.keep_visible) needed = needed || within(resolved(path), dir);
    if (needed) continue;
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k") != 0) {
      throw ConfinementError(failed(std::string("mounting an empty tmpfs on ") + dir));
    }
    hidden += (hidden.empty() ? "" : ", ") + std::string(dir);
  }
  // The store gets a mount of its own so that it alone can stay writable.
  if (mount(store.c_str(), store.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    throw ConfinementError(failed("bind-mounting the store " + store.string()));
  }
  set_attributes("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0);
  set_attributes(store.c_str(), 0, MOUNT_ATTR_RDONLY);
  return hidden.empty() ? "nothing" : hidden;
}

}  // namespace

Confinement Confinement::enter(const ConfinementPlan& plan) {
  const fsys::path store = resolved(plan.store);
  // Not resolved: the mountpoint is our own mount now, and a stat of it
  // would wait for the very daemon that asks.
  const std::string mountpoint = fsys::absolute(plan.mountpoint).string();

  // Where to go back to if a step fails half-way.
  int host_ns = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  if (host_ns < 0) throw ConfinementError(failed("opening /proc/self/ns/mnt"));

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    close(host_ns);
    throw ConfinementError(failed("pipe2"));
  }
  pid_t child = fork();
  if (child < 0) {
    int err = errno;
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    close(host_ns);
    errno = err;
    throw ConfinementError(failed("forking the unmounter"));
  }
  if (child == 0) run_unmounter(pipe_fds[0], mountpoint.c_str());
  close(pipe_fds[0]);
  Confinement out(child, pipe_fds[1], "");

  try {
    if (unshare(CLONE_NEWNS) != 0) throw ConfinementError(failed("unshare(CLONE_NEWNS)"));
    try {
      out.hidden_ = arrange_namespace(plan, store, mountpoint);
    } catch (const ConfinementError&) {
      // Back to the host's namespace; the half-made one goes with the last
      // process in it.
      if (setns(host_ns, CLONE_NEWNS) != 0) {
        throw ConfinementError(failed("returning to the host's mount namespace after a failed step"));
      }
      throw;
    }
  } catch (...) {
    close(host_ns);
    out.stop_unmounter();
    throw;
  }
  close(host_ns);
  return out;
}

Confinement::Confinement(Confinement&& other) noexcept
    : unmounter_(std::exchange(other.unmounter_, -1)),
      request_fd_(std::exchange(other.request_fd_, -1)),
      hidden_(std::move(other.hidden_)) {}

Confinement::~Confinement() { stop_unmounter(); }

void Confinement::stop_unmounter() {
  if (request_fd_ >= 0) close(request_fd_);  // end of file: it exits without unmounting
  request_fd_ = -1;
  if (unmounter_ > 0) {
    int status;
    while (waitpid(unmounter_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  unmounter_ = -1;
}

bool Confinement::unmount_host(std::string& why) {
  if (request_fd_ < 0 || unmounter_ <= 0) {
    why = "the unmounter is gone";
    return false;
  }
  const char request = 'u';
  if (write(request_fd_, &request, 1) != 1) {
    why = failed("asking the unmounter");
    stop_unmounter();
    return false;
  }
  int status = 0;
  pid_t got;
  while ((got = waitpid(unmounter_, &status, 0)) < 0 && errno == EINTR) {
  }
  unmounter_ = -1;
  close(request_fd_);
  request_fd_ = -1;
  if (got < 0) {
    why = failed("waiting for the unmounter");
    return false;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    why = WIFEXITED(status) ? std::string("umount: ") + std::strerror(WEXITSTATUS(status)) : "the unmounter was killed";
    return false;
  }
  return true;
}

}  // namespace artifactfs::fs

// Confinement of the daemon once it has mounted: what systemd's
// ProtectSystem=strict (with the store as the one writable path),
// ProtectHome= and PrivateTmp= give a service, done by the daemon itself.
//
// A unit cannot ask systemd for those: they give the service its own mount
// namespace, a slave of the host's, and a FUSE mount made inside it never
// reaches the host (systemd.exec(5): "these settings will disconnect
// propagation of mounts from the unit's processes to the host"). So the
// daemon mounts in the host's namespace first and then moves into a private
// one (unshare(CLONE_NEWNS)) where:
//   - nothing propagates back to the host (every mount made a slave first);
//   - every mount is read-only except a bind mount of the store;
//   - /tmp, /var/tmp, /home, /root and /run/user are empty read-only tmpfs,
//     unless the store or the configuration file lies below one of them.
// The daemon reaches the backing tree only through descriptors opened
// before the move, which keep their own mounts; paths are used for the
// store's small files (the lock, the layout) and for re-reading the
// configuration on SIGHUP, which stay reachable.
//
// Unmounting: at a clean stop the host's mount must go, but an unmount from
// inside the private namespace reaches only its copy. A small process
// forked before the move (the "unmounter") stays in the host's namespace,
// waits on a pipe, and on request unmounts the host's mount and exits. If
// the daemon dies instead (kill -9), the pipe's end closes and the
// unmounter exits without unmounting, as an unconfined daemon would leave
// the mount (the next mount clears it).
//
// Mounts the host makes after the move appear in the namespace writable
// (they propagate from the host as new mounts), as under systemd.
//
// CONCURRENCY MODEL
// enter() must run while the daemon has one thread (unshare(CLONE_NEWNS)
// fails in a process whose threads share its filesystem context); the
// unmounter is forked at that point too, so it inherits no locks. After
// that, unmount_host() is called once, from the thread that stops the daemon.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace artifactfs::fs {

class ConfinementError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ConfinementPlan {
  std::filesystem::path store;       // stays writable
  std::filesystem::path mountpoint;  // the host's FUSE mount (never stat'ed: it is ours), unmounted by unmount_host()
  // Must stay readable: the configuration file, re-read on SIGHUP.
  std::vector<std::filesystem::path> keep_visible;
};

class Confinement {
 public:
  // Forks the unmounter and moves the daemon into its private namespace.
  // Throws ConfinementError saying which step failed and why; the daemon is
  // then left as it was (the unmounter is stopped).
  static Confinement enter(const ConfinementPlan& plan);

  Confinement(Confinement&& other) noexcept;
  Confinement& operator=(Confinement&&) = delete;
  Confinement(const Confinement&) = delete;
  ~Confinement();  // without unmount_host(): the unmounter exits, the mount stays

  // What was hidden (for the log): "/tmp, /var/tmp, ...".
  const std::string& hidden() const { return hidden_; }

  // Has the unmounter unmount the host's mount (lazily, as fusermount -u -z)
  // and waits for it. False, with the reason in `why`, if it could not.
  bool unmount_host(std::string& why);

 private:
  Confinement(pid_t unmounter, int request_fd, std::string hidden)
      : unmounter_(unmounter), request_fd_(request_fd), hidden_(std::move(hidden)) {}
  void stop_unmounter();
  pid_t unmounter_ = -1;
  int request_fd_ = -1;
  std::string hidden_;
};

}  // namespace artifactfs::fs

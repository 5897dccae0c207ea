// FUSE over io_uring (Linux 6.14 and later): the kernel keeps one request
// queue per CPU and hands each request to the queue of the CPU its caller
// runs on; a daemon thread pinned to that CPU serves it. The caller, the
// kernel and the daemon stay on one CPU, so a warm open costs no wake-up of
// another CPU, which on a virtual machine is most of its price.
//
// libfuse 3.14 predates this transport. It is added underneath libfuse
// through its custom I/O hooks (fuse_session_custom_io): requests that
// arrive on a ring are rebuilt into the byte layout /dev/fuse delivers and
// handed to fuse_session_process_buf, and libfuse's replies (its writev) are
// copied back into the ring entry and committed. The FUSE_INIT reply gains
// the FUSE_OVER_IO_URING flag. Everything above (the Filesystem, its
// operations, their replies) is the same on both transports.
//
// The kernel only offers the transport when the fuse module's enable_uring
// parameter is on (/sys/module/fuse/parameters/enable_uring), an operator's
// choice; `fuse.io-uring` says whether to use it (config.hpp).
//
// CONCURRENCY MODEL
// One ring thread per possible CPU, pinned to it, owns its ring. Quick
// requests (the read-only open/release, lookup, getattr, ...) are served on
// the ring thread itself; anything that may wait on the disk
// or on the quota (writes, reads, creation, renames, fsync, writable opens)
// goes to a pool of worker threads, so a slow request never holds up the
// other requests of its CPU. Only a ring's own thread touches that ring
// (the kernel delivers an entry's next request through whoever submitted its
// commit): a worker puts its reply on the queue's list and writes the
// queue's eventfd, which the ring polls. The Notifier's invalidations and
// the replies to /dev/fuse's requests go to /dev/fuse. Locks, each held for
// a few instructions and never while waiting: a queue's mutex (its list of
// replies to commit) and the pool's mutex (requests for workers); neither
// is taken while holding the other.
#pragma once

#include <fuse_lowlevel.h>

#include <cstddef>
#include <memory>
#include <string>

#include "config/config.hpp"

namespace artifactfs::fs {

class UringTransport {
 public:
  // Whether `mode` asks for the transport and the kernel offers it. For
  // `on` without kernel support, throws std::runtime_error with the fix.
  static bool wanted(config::IoUring mode);

  // Installs the transport's I/O hooks on a mounted session, before its loop
  // runs. The rings start once the kernel has accepted FUSE_INIT; until then
  // (and for FORGET and INTERRUPT, which the kernel always sends on
  // /dev/fuse) the session's own loop serves /dev/fuse. `workers` threads
  // serve the requests that may block; `max_write` is the connection's.
  UringTransport(fuse_session* session, int workers, std::size_t max_write);
  ~UringTransport();  // stop() if not done
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  // After the mount is gone: ends the ring threads and the workers.
  void stop();

  // While this thread serves a request that came on a ring: that ring
  // entry's reply area, if it holds `size` bytes, so data read into it is
  // sent as it lies (no buffer allocated, nothing copied again); the reply
  // made from it must be this request's. nullptr otherwise.
  static char* reply_space(std::size_t size);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace artifactfs::fs

// Backgrounding the daemon. The fork happens before anything else (the LMDB
// environment, threads) exists, because neither survives a fork; the parent
// waits until the child has mounted (exit 0) or failed (exit 1, after the
// child printed why on the still-shared stderr).
#pragma once

namespace artifactfs::fs {

class Background {
 public:
  // In the parent this never returns. In the child it returns at once.
  static Background fork_and_wait();
  // The mount is ready: detach stdio and release the waiting parent.
  void ready();
  Background(Background&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background();

 private:
  explicit Background(int fd) : fd_(fd) {}
  int fd_;  // write end of the pipe the parent waits on; -1 when done
};

}  // namespace artifactfs::fs

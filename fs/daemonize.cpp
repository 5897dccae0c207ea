#include "fs/daemonize.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace artifactfs::fs {

Background Background::fork_and_wait() {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "artifactfs: cannot create a pipe to start in the background: %s\n", std::strerror(errno));
    std::exit(1);
  }
  pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "artifactfs: cannot fork to start in the background: %s\n", std::strerror(errno));
    std::exit(1);
  }
  if (pid > 0) {
    close(pipe_fds[1]);
    char ready = 0;
    ssize_t n;
    do {
      n = read(pipe_fds[0], &ready, 1);
    } while (n < 0 && errno == EINTR);
    // EOF without the byte: the child failed and said why on stderr.
    if (n == 1) std::_Exit(0);
    int status = 0;
    waitpid(pid, &status, 0);
    std::_Exit(WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1);
  }
  close(pipe_fds[0]);
  setsid();
  return Background(pipe_fds[1]);
}

void Background::ready() {
  if (fd_ < 0) return;
  if (chdir("/") != 0) { /* the daemon uses absolute paths only */ }
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO) close(null);
  }
  char ready = 1;
  if (write(fd_, &ready, 1) != 1) { /* the parent is gone; nothing to tell */ }
  close(fd_);
  fd_ = -1;
}

Background::~Background() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace artifactfs::fs

#include "cli/commands.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "config/config.hpp"
#include "fs/mount.hpp"

namespace artifactfs::cli {

namespace {

constexpr int exit_usage = 2;  // bad command line or bad configuration
constexpr int exit_failure = 1;

void print_config_problems(const config::ConfigError& error) {
  for (const std::string& problem : error.problems()) std::cerr << "artifactfs: " << problem << '\n';
}

}  // namespace

int run_mount_command(const Arguments& args) {
  // Absolute paths now: the daemon may chdir("/") before it reads them, and
  // a SIGHUP reload must find the same configuration file later.
  std::optional<std::filesystem::path> config_file;
  fs::MountRequest request;
  try {
    if (args.config_file) config_file = std::filesystem::absolute(*args.config_file);
    request.store = std::filesystem::absolute(args.store);
    request.mountpoint = std::filesystem::absolute(args.mountpoint);
  } catch (const std::filesystem::filesystem_error& error) {
    std::cerr << "artifactfs: cannot make paths absolute: " << error.what() << '\n';
    return exit_failure;
  }

  // Validated before anything is mounted, so a typo never leaves a
  // half-started daemon or an unmanaged cache behind.
  try {
    request.config = config::load(config_file, args.overrides);
  } catch (const config::ConfigError& error) {
    print_config_problems(error);
    return exit_usage;
  }

  request.fuse_options = args.fuse_options;
  request.foreground = args.foreground;
  request.rebuild_index = args.rebuild_index;
  request.reload = [config_file, overrides = args.overrides] { return config::load(config_file, overrides); };
  return fs::run_mount(request);
}

int run_config_command(const Arguments& args) {
  try {
    std::cout << config::to_yaml(config::load(args.config_file, args.overrides));
  } catch (const config::ConfigError& error) {
    print_config_problems(error);
    return exit_usage;
  }
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "artifactfs: cannot write the configuration to standard output\n";
    return exit_failure;
  }
  return 0;
}

int run_unmount_command(const Arguments& args) {
  // fusermount3 is setuid root and knows how to unmount for an unprivileged
  // user; doing it ourselves would need privileges we do not have.
  std::string program = "fusermount3";
  std::string flag = "-u";
  std::string mountpoint = args.mountpoint;
  char* const argv[] = {program.data(), flag.data(), mountpoint.data(), nullptr};
  std::cout.flush();
  ::execvp(program.c_str(), argv);
  const int error = errno;
  std::cerr << "artifactfs: cannot run fusermount3 -u " << args.mountpoint << ": " << std::strerror(error)
            << (error == ENOENT ? " (install the fuse3 package, or unmount with: umount " + args.mountpoint + ")" : "")
            << '\n';
  return exit_failure;
}

}  // namespace artifactfs::cli

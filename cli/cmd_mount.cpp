// artifactfs mount, unmount and config: serving a cache and checking its
// configuration.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "config/config.hpp"
#include "fs/mount.hpp"

namespace artifactfs::cli {

namespace {

void print_config_problems(const config::ConfigError& error) {
  for (const std::string& problem : error.problems()) std::cerr << "artifactfs: " << problem << '\n';
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::string part;
  for (char c : text) {
    if (c == ',') {
      if (!part.empty()) parts.push_back(part);
      part.clear();
    } else {
      part += c;
    }
  }
  if (!part.empty()) parts.push_back(part);
  return parts;
}

std::optional<std::filesystem::path> config_file(const ParsedArgs& args) {
  auto file = args.value("config");
  if (!file) return std::nullopt;
  if (file->empty()) throw UsageError("option -c needs a file name");
  return std::filesystem::path(*file);
}

}  // namespace

int run_mount_command(const ParsedArgs& args) {
  // Absolute paths now: the daemon may chdir("/") before it reads them, and
  // a SIGHUP reload must find the same configuration file later.
  std::optional<std::filesystem::path> file;
  fs::MountRequest request;
  if (args.arguments.size() == 1) throw UsageError("give both STORE and MOUNTPOINT, or neither (then mount.store and mount.point of CONFIG)");
  try {
    if (auto c = config_file(args)) file = std::filesystem::absolute(*c);
  } catch (const std::filesystem::filesystem_error& error) {
    std::cerr << "artifactfs: cannot make paths absolute: " << error.what() << '\n';
    return exit_code::failure;
  }
  const std::vector<std::string> overrides = args.values("set");
  // Validated before anything is mounted, so a typo never leaves a
  // half-started daemon or an unmanaged cache behind.
  try {
    request.config = config::load(file, overrides);
  } catch (const config::ConfigError& error) {
    print_config_problems(error);
    return exit_code::usage;
  }
  if (args.arguments.size() == 2) {
    request.store = std::filesystem::absolute(args.arguments[0]);
    request.mountpoint = std::filesystem::absolute(args.arguments[1]);
  } else if (request.config.mount.store.empty() || request.config.mount.point.empty()) {
    throw UsageError("no STORE and MOUNTPOINT: give them, or set mount.store and mount.point in the configuration");
  } else {
    request.store = request.config.mount.store;
    request.mountpoint = request.config.mount.point;
  }
  for (const auto& o : args.values("options")) {
    for (auto& option : split_commas(o)) request.fuse_options.push_back(std::move(option));
  }
  request.foreground = args.has("foreground");
  request.rebuild_index = args.has("rebuild-index");
  request.reload = [file, overrides] { return config::load(file, overrides); };
  if (file) request.config_file = *file;
  return fs::run_mount(request);
}

int run_config_command(const ParsedArgs& args) {
  try {
    std::cout << config::to_yaml(config::load(config_file(args), args.values("set")));
  } catch (const config::ConfigError& error) {
    print_config_problems(error);
    return exit_code::usage;
  }
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "artifactfs: cannot write the configuration to standard output\n";
    return exit_code::failure;
  }
  return exit_code::ok;
}

int run_unmount_command(const ParsedArgs& args) {
  // fusermount3 is setuid root and knows how to unmount for an unprivileged
  // user; doing it ourselves would need privileges we do not have.
  std::string program = "fusermount3";
  std::string flag = "-u";
  std::string mountpoint = args.arguments.at(0);
  char* const argv[] = {program.data(), flag.data(), mountpoint.data(), nullptr};
  std::cout.flush();
  ::execvp(program.c_str(), argv);
  const int error = errno;
  std::cerr << "artifactfs: cannot run fusermount3 -u " << mountpoint << ": " << std::strerror(error)
            << (error == ENOENT ? " (install the fuse3 package, or unmount with: umount " + mountpoint + ")" : "")
            << '\n';
  return exit_code::failure;
}

}  // namespace artifactfs::cli

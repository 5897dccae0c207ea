// The artifactfs executable: parses the command line and hands over to the
// command. Everything with behaviour lives in args.cpp and commands.cpp.
#include <iostream>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/commands.hpp"

#ifndef ARTIFACTFS_VERSION
#define ARTIFACTFS_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  using namespace artifactfs::cli;
  Arguments args;
  try {
    args = parse_arguments(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& error) {
    std::cerr << "artifactfs: " << error.what() << "\n\n" << usage_text();
    return 2;
  }

  switch (args.command) {
    case Command::help: std::cout << usage_text(); return 0;
    case Command::version: std::cout << "artifactfs " << ARTIFACTFS_VERSION << '\n'; return 0;
    case Command::mount: return run_mount_command(args);
    case Command::config: return run_config_command(args);
    case Command::unmount: return run_unmount_command(args);
  }
  return 2;
}

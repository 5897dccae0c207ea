// What each artifactfs command does, given parsed arguments. Each returns the
// process exit status.
#pragma once

#include "cli/args.hpp"

namespace artifactfs::cli {

int run_mount_command(const Arguments& args);
int run_config_command(const Arguments& args);
int run_unmount_command(const Arguments& args);

}  // namespace artifactfs::cli

// What each artifactfs command does, given parsed arguments; each returns
// the process exit status (exit_codes.hpp). The grammar and help of every
// command are in command_table.cpp.
#pragma once

#include <vector>

#include "cli/args.hpp"

namespace artifactfs::cli {

const std::vector<CommandSpec>& command_table();

int run_mount_command(const ParsedArgs& args);    // cmd_mount.cpp
int run_unmount_command(const ParsedArgs& args);
int run_config_command(const ParsedArgs& args);
int run_status_command(const ParsedArgs& args);   // cmd_status.cpp
int run_ls_command(const ParsedArgs& args);       // cmd_inspect.cpp
int run_du_command(const ParsedArgs& args);
int run_log_command(const ParsedArgs& args);
int run_pin_command(const ParsedArgs& args);      // cmd_steer.cpp
int run_unpin_command(const ParsedArgs& args);
int run_evict_command(const ParsedArgs& args);
int run_cleanup_command(const ParsedArgs& args);
int run_fsck_command(const ParsedArgs& args);     // cmd_fsck.cpp
int run_man_command(const ParsedArgs& args);      // main.cpp

}  // namespace artifactfs::cli

// Help text and man pages, both made from the command table, so that
// `artifactfs CMD --help` and `man artifactfs-CMD` never disagree.
#pragma once

#include <string>
#include <vector>

#include "cli/args.hpp"

namespace artifactfs::cli {

std::string help_text(const CommandSpec& command);
// `artifactfs --help`: every command with its summary.
std::string overview_text(const std::vector<CommandSpec>& commands);
// roff for man(1): section 1, artifactfs-NAME; `command` null: artifactfs(1).
std::string man_page(const CommandSpec* command, const std::vector<CommandSpec>& commands, const std::string& version);

}  // namespace artifactfs::cli

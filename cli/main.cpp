// The artifactfs executable: finds the command, parses its arguments and
// hands over to it. Errors a command reports end here with their message and
// exit status.
#include <iostream>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "cli/help.hpp"
#include "cli/target.hpp"

#ifndef ARTIFACTFS_VERSION
#define ARTIFACTFS_VERSION "unknown"
#endif

namespace artifactfs::cli {

int run_man_command(const ParsedArgs& args) {
  const auto& table = command_table();
  const CommandSpec* command = nullptr;
  if (!args.arguments.empty()) {
    command = find_command(args.arguments[0], table);
    if (!command) throw UsageError("no command '" + args.arguments[0] + "'");
  }
  std::cout << man_page(command, table, ARTIFACTFS_VERSION);
  return exit_code::ok;
}

}  // namespace artifactfs::cli

int main(int argc, char** argv) {
  using namespace artifactfs::cli;
  const std::vector<std::string> args(argv + 1, argv + argc);
  const auto& table = command_table();
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    if (args.size() > 1) {
      if (const CommandSpec* c = find_command(args[1], table)) {
        std::cout << help_text(*c);
        return exit_code::ok;
      }
    }
    (args.empty() ? std::cerr : std::cout) << overview_text(table);
    return args.empty() ? exit_code::usage : exit_code::ok;
  }
  if (args[0] == "--version") {
    std::cout << "artifactfs " << ARTIFACTFS_VERSION << '\n';
    return exit_code::ok;
  }
  ParsedArgs parsed;
  try {
    parsed = parse_arguments(args, table);
    if (parsed.has("help")) {
      std::cout << help_text(*parsed.command);
      return exit_code::ok;
    }
    return parsed.command->run(parsed);
  } catch (const UsageError& error) {
    std::cerr << "artifactfs: " << error.what() << '\n';
    if (std::string(error.what()).find("--help") == std::string::npos) {
      std::cerr << "(see `artifactfs " << (parsed.command ? parsed.command->name + " " : std::string()) << "--help`)\n";
    }
    return exit_code::usage;
  } catch (const CommandError& error) {
    std::cerr << "artifactfs: " << error.what() << '\n';
    return error.status;
  } catch (const std::exception& error) {
    std::cerr << "artifactfs: " << error.what() << '\n';
    return exit_code::failure;
  }
}

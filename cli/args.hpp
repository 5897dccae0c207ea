// The command line's grammar: each command declares its options, its
// arguments and its help text once (command_table.cpp); the parser, the
// --help output and the man pages (help.cpp) are all made from that.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace artifactfs::cli {

// A mistake on the command line; main() prints it with a hint and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OptionSpec {
  std::string long_name;   // without "--"
  char short_name = 0;     // 0: none
  std::string value_name;  // empty: a flag without a value
  std::string help;
  bool repeatable = false;
  // Short form may carry its value attached ("-oOPT"), as FUSE's -o does.
};

struct ParsedArgs;
using RunFunction = int (*)(const ParsedArgs&);

struct CommandSpec {
  std::string name;
  std::vector<std::string> aliases;
  std::string synopsis;     // after "artifactfs NAME"
  std::string summary;      // one line
  std::string description;  // paragraphs separated by blank lines
  std::vector<OptionSpec> options;
  std::size_t min_arguments = 0;
  std::size_t max_arguments = 0;
  std::string exit_status;  // lines "CODE  meaning"
  std::string examples;     // lines
  RunFunction run = nullptr;
};

struct ParsedArgs {
  const CommandSpec* command = nullptr;
  std::map<std::string, std::vector<std::string>> options;  // by long name; flags hold ""
  std::vector<std::string> arguments;

  bool has(const std::string& name) const { return options.count(name) > 0; }
  std::optional<std::string> value(const std::string& name) const;  // the last one given
  std::vector<std::string> values(const std::string& name) const;
};

// `args` excludes argv[0]; args[0] names the command. Throws UsageError.
// A command's -h/--help is returned as the option "help".
ParsedArgs parse_arguments(const std::vector<std::string>& args, const std::vector<CommandSpec>& commands);

const CommandSpec* find_command(std::string_view name, const std::vector<CommandSpec>& commands);

}  // namespace artifactfs::cli

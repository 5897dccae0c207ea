// Hand-written on purpose: a dozen commands with a few options each do not
// justify a dependency, and the FUSE-style "-o a,b" and "-oa,b" forms would
// need special cases in most option libraries anyway.
#include "cli/args.hpp"

namespace artifactfs::cli {

namespace {

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

const OptionSpec* find_long(const CommandSpec& command, std::string_view name) {
  for (const auto& o : command.options) {
    if (o.long_name == name) return &o;
  }
  return nullptr;
}

const OptionSpec* find_short(const CommandSpec& command, char name) {
  for (const auto& o : command.options) {
    if (o.short_name == name) return &o;
  }
  return nullptr;
}

}  // namespace

std::optional<std::string> ParsedArgs::value(const std::string& name) const {
  auto it = options.find(name);
  if (it == options.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> ParsedArgs::values(const std::string& name) const {
  auto it = options.find(name);
  return it == options.end() ? std::vector<std::string>{} : it->second;
}

const CommandSpec* find_command(std::string_view name, const std::vector<CommandSpec>& commands) {
  for (const auto& c : commands) {
    if (c.name == name) return &c;
    for (const auto& alias : c.aliases) {
      if (alias == name) return &c;
    }
  }
  return nullptr;
}

ParsedArgs parse_arguments(const std::vector<std::string>& args, const std::vector<CommandSpec>& commands) {
  if (args.empty()) throw UsageError("missing command");
  const std::string& name = args[0];
  ParsedArgs parsed;
  parsed.command = find_command(name, commands);
  if (!parsed.command) {
    std::string known;
    for (const auto& c : commands) known += (known.empty() ? "" : ", ") + c.name;
    throw UsageError(std::string(starts_with(name, "-") ? "unknown option '" : "unknown command '") + name +
                     "' (commands: " + known + ")");
  }
  const CommandSpec& command = *parsed.command;
  auto add = [&](const OptionSpec& o, std::string value) {
    auto& list = parsed.options[o.long_name];
    if (!list.empty() && !o.repeatable && o.value_name.empty()) return;
    if (!o.repeatable) list.clear();
    list.push_back(std::move(value));
  };
  bool options_ended = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      parsed.options["help"].push_back("");
      return parsed;
    }
    if (options_ended || arg == "-" || !starts_with(arg, "-")) {
      parsed.arguments.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    const OptionSpec* o = nullptr;
    std::optional<std::string> attached;
    if (starts_with(arg, "--")) {
      std::string long_name = arg.substr(2);
      if (auto eq = long_name.find('='); eq != std::string::npos) {
        attached = long_name.substr(eq + 1);
        long_name.resize(eq);
      }
      o = find_long(command, long_name);
    } else {
      o = find_short(command, arg[1]);
      if (o && arg.size() > 2) {
        if (o->value_name.empty()) o = nullptr;  // "-fx": no bundling of flags
        else attached = arg.substr(2);
      }
    }
    if (!o) throw UsageError("unknown option '" + arg + "' for '" + command.name + "' (see artifactfs " + command.name + " --help)");
    if (o->value_name.empty()) {
      if (attached) throw UsageError("option --" + o->long_name + " takes no value");
      add(*o, "");
      continue;
    }
    if (!attached) {
      if (i + 1 >= args.size()) throw UsageError("option " + arg + " needs a value (" + o->value_name + ")");
      attached = args[++i];
    }
    add(*o, *attached);
  }
  const std::size_t n = parsed.arguments.size();
  if (n < command.min_arguments) {
    throw UsageError("'" + command.name + "' needs more arguments: artifactfs " + command.name + " " + command.synopsis);
  }
  if (n > command.max_arguments) {
    throw UsageError("unexpected argument '" + parsed.arguments[command.max_arguments] + "' for '" + command.name +
                     "': artifactfs " + command.name + " " + command.synopsis);
  }
  return parsed;
}

}  // namespace artifactfs::cli

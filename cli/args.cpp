// Hand-written on purpose: three commands and a handful of options do not
// justify a dependency, and the FUSE-style "-o a,b" and "-oa,b" forms would
// need special cases in most option libraries anyway.
#include "cli/args.hpp"

#include <cstddef>

namespace artifactfs::cli {

namespace {

constexpr std::string_view usage =
    "usage:\n"
    "  artifactfs mount STORE MOUNTPOINT [-c CONFIG] [-o OPT[,OPT...]]... [--set KEY=VALUE]... [-f] [--rebuild-index]\n"
    "  artifactfs config [-c CONFIG] [--set KEY=VALUE]...\n"
    "  artifactfs unmount MOUNTPOINT\n"
    "  artifactfs --help | --version\n"
    "\n"
    "commands:\n"
    "  mount      serve the cache kept in STORE at MOUNTPOINT, with a quota and\n"
    "             least-recently-used expiry\n"
    "  config     check a configuration and print the effective settings as YAML\n"
    "  unmount    unmount MOUNTPOINT (runs fusermount3 -u)\n"
    "\n"
    "options:\n"
    "  -c, --config CONFIG    YAML configuration file; without it, built-in defaults\n"
    "  -o OPT[,OPT...]        FUSE mount options, e.g. -o default_permissions\n"
    "      --set KEY=VALUE    override one setting after the file, e.g.\n"
    "                         --set quota.max-size=100G --set layout.keep='[stats, \"*.lock\"]'\n"
    "  -f, --foreground       stay in the foreground (do not daemonize)\n"
    "      --rebuild-index    move the index aside and rebuild it from STORE\n"
    "  -h, --help             show this help\n"
    "      --version          show the version\n"
    "\n"
    "SIGHUP makes a mounted daemon re-read CONFIG with the same --set overrides;\n"
    "check the file first with: artifactfs config -c CONFIG\n";

struct OptionSpec {
  bool config = false;   // -c, --set
  bool mount = false;    // -o, -f, --rebuild-index
  std::size_t positionals = 0;
  const char* positional_names = "";
};

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

bool starts_with(const std::string& text, std::string_view prefix) { return text.rfind(prefix, 0) == 0; }

}  // namespace

std::string_view usage_text() { return usage; }

Arguments parse_arguments(const std::vector<std::string>& args) {
  Arguments result;
  if (args.empty()) throw UsageError("missing command");

  const std::string& name = args[0];
  OptionSpec spec;
  if (name == "-h" || name == "--help" || name == "help") {
    result.command = Command::help;
    return result;
  } else if (name == "--version") {
    result.command = Command::version;
    return result;
  } else if (name == "mount") {
    result.command = Command::mount;
    spec = {true, true, 2, "STORE and MOUNTPOINT"};
  } else if (name == "config") {
    result.command = Command::config;
    spec = {true, false, 0, ""};
  } else if (name == "unmount" || name == "umount") {
    result.command = Command::unmount;
    spec = {false, false, 1, "MOUNTPOINT"};
  } else if (starts_with(name, "-")) {
    throw UsageError("unknown option '" + name + "' (expected a command first: mount, config or unmount)");
  } else {
    throw UsageError("unknown command '" + name + "' (expected mount, config, unmount, help)");
  }

  std::vector<std::string> positionals;
  bool options_ended = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_ended || arg == "-" || !starts_with(arg, "-")) {
      positionals.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    // The value of an option: "--opt=VALUE", "-oVALUE", or the next argument.
    auto value_of = [&](std::string_view long_name, std::string_view short_name) -> std::optional<std::string> {
      if (!long_name.empty()) {
        if (arg == long_name) {
          if (i + 1 >= args.size()) throw UsageError("option " + arg + " needs a value");
          return args[++i];
        }
        if (starts_with(arg, std::string(long_name) + "=")) return arg.substr(long_name.size() + 1);
      }
      if (!short_name.empty() && starts_with(arg, short_name)) {
        if (arg.size() > short_name.size()) return arg.substr(short_name.size());
        if (i + 1 >= args.size()) throw UsageError("option " + arg + " needs a value");
        return args[++i];
      }
      return std::nullopt;
    };

    if (arg == "-h" || arg == "--help") {
      result.command = Command::help;
      return result;
    }
    if (spec.config) {
      if (auto file = value_of("--config", "-c")) {
        if (file->empty()) throw UsageError("option -c needs a file name");
        result.config_file = *file;
        continue;
      }
      if (auto setting = value_of("--set", "")) {
        // Checked later with the file, so that every problem is reported together.
        result.overrides.push_back(*setting);
        continue;
      }
    }
    if (spec.mount) {
      if (arg == "-f" || arg == "--foreground") {
        result.foreground = true;
        continue;
      }
      if (arg == "--rebuild-index") {
        result.rebuild_index = true;
        continue;
      }
      if (auto options = value_of("", "-o")) {
        for (std::string& option : split_commas(*options)) result.fuse_options.push_back(std::move(option));
        continue;
      }
    }
    throw UsageError("unknown option '" + arg + "' for '" + name + "'");
  }

  if (positionals.size() < spec.positionals) {
    throw UsageError("'" + name + "' needs " + spec.positional_names + " (missing " +
                     std::to_string(spec.positionals - positionals.size()) + " argument" +
                     (spec.positionals - positionals.size() == 1 ? "" : "s") + ")");
  }
  if (positionals.size() > spec.positionals) {
    throw UsageError("unexpected argument '" + positionals[spec.positionals] + "' for '" + name + "'");
  }
  if (result.command == Command::mount) {
    result.store = positionals[0];
    result.mountpoint = positionals[1];
  } else if (result.command == Command::unmount) {
    result.mountpoint = positionals[0];
  }
  return result;
}

}  // namespace artifactfs::cli

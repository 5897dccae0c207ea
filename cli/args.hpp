// Command-line parsing for the artifactfs executable. Kept apart from main()
// so that the grammar lives in one place and the usage text stays next to it.
#pragma once

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace artifactfs::cli {

// A mistake on the command line; the caller prints it with the usage text
// and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Command { help, version, mount, config, unmount };

struct Arguments {
  Command command = Command::help;
  std::optional<std::filesystem::path> config_file;  // -c, --config
  std::vector<std::string> overrides;                // --set KEY=VALUE, in order
  std::vector<std::string> fuse_options;             // every -o, split on commas
  bool foreground = false;                           // -f, --foreground
  bool rebuild_index = false;                        // --rebuild-index
  std::string store;                                 // mount
  std::string mountpoint;                            // mount, unmount
};

// `args` excludes argv[0]. Throws UsageError.
Arguments parse_arguments(const std::vector<std::string>& args);

std::string_view usage_text();

}  // namespace artifactfs::cli

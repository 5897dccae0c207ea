// Loading, validating and printing the configuration.
//
// One table (`known_keys`) lists every leaf key with the function that parses
// and checks its value. The same walk over YAML nodes serves the file and the
// --set overrides, so both get identical validation and messages. Nothing
// stops at the first problem: an operator fixing a file before a SIGHUP
// should see every mistake at once, not one per attempt.
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include <grp.h>
#include <yaml-cpp/yaml.h>

#include "config/config.hpp"

namespace artifactfs::config {

namespace {

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) {
    if (!text.empty()) text += '\n';
    text += line;
  }
  return text;
}

// One or more problems inside a single value (e.g. two bad globs in one
// list), each at its own node.
struct ValueProblems {
  struct Item {
    std::string key_suffix;  // appended to the key, e.g. "[2]"
    YAML::Mark mark;
    std::string what;
  };
  std::vector<Item> items;
};

std::string describe_type(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "no value";
    case YAML::NodeType::Scalar: return "a single value";
    case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

// The text of a scalar, or invalid_argument saying what was found instead.
std::string scalar_text(const YAML::Node& node, const std::string& expected) {
  if (!node.IsScalar()) throw std::invalid_argument("got " + describe_type(node) + " (expected " + expected + ")");
  return node.Scalar();
}

int int_in_range(const YAML::Node& node, int low, int high) {
  const std::string expected = "an integer from " + std::to_string(low) + " to " + std::to_string(high);
  const std::string text = scalar_text(node, expected);
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw std::invalid_argument("'" + text + "' is not an integer (expected " + expected + ")");
  }
  if (value < low || value > high) throw std::invalid_argument(text + " is out of range (expected " + expected + ")");
  return static_cast<int>(value);
}

double fraction_in_range(const YAML::Node& node, double low, double high) {
  std::ostringstream expected_stream;
  expected_stream << "a number from " << low << " to " << high;
  const std::string expected = expected_stream.str();
  const std::string text = scalar_text(node, expected);
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw std::invalid_argument("'" + text + "' is not a number (expected " + expected + ")");
  }
  if (!(value >= low && value <= high)) throw std::invalid_argument(text + " is out of range (expected " + expected + ")");
  return value;
}

bool boolean(const YAML::Node& node) {
  const std::string text = scalar_text(node, "true or false");
  bool value = false;
  if (!YAML::convert<bool>::decode(node, value)) {
    throw std::invalid_argument("'" + text + "' is not a boolean (expected true or false)");
  }
  return value;
}

std::chrono::milliseconds duration_in_range(const YAML::Node& node, std::chrono::milliseconds low,
                                            std::chrono::milliseconds high) {
  const std::string expected = "a duration from " + format_duration(low) + " to " + format_duration(high);
  const std::chrono::milliseconds value = parse_duration(scalar_text(node, expected + ", e.g. 30s"));
  if (value < low || value > high) {
    throw std::invalid_argument(format_duration(value) + " is out of range (expected " + expected + ")");
  }
  return value;
}

// A list of strings, each checked by `problem_with` (an empty answer: fine;
// else what is wrong, with what is expected). Every bad item is reported.
std::vector<std::string> checked_list(const YAML::Node& node, const std::string& expected, const std::string& item_kind,
                                      const std::function<std::string(const std::string& item,
                                                                      const std::vector<std::string>& so_far)>& problem_with) {
  // `keep:` with nothing after it reads as "keep nothing".
  if (node.IsNull()) return {};
  if (!node.IsSequence()) throw std::invalid_argument("got " + describe_type(node) + " (expected " + expected + ")");
  std::vector<std::string> items;
  ValueProblems problems;
  for (std::size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string index = "[" + std::to_string(i) + "]";
    if (!item.IsScalar()) {
      problems.items.push_back({index, item.Mark(), "got " + describe_type(item) + " (expected " + item_kind + ")"});
    } else if (std::string why = problem_with(item.Scalar(), items); !why.empty()) {
      problems.items.push_back({index, item.Mark(), why});
    } else {
      items.push_back(item.Scalar());
    }
  }
  if (!problems.items.empty()) throw problems;
  return items;
}

std::vector<std::string> glob_list(const YAML::Node& node) {
  return checked_list(node, "a list of file name globs, e.g. [stats, \"*.lock\"]", "a file name glob",
                      [](const std::string& glob, const std::vector<std::string>&) -> std::string {
                        if (glob.empty()) return "empty glob (expected a file name glob such as \"*.lock\")";
                        // Globs are matched against one entry's name, never a
                        // path, so a slash could never match and would
                        // silently keep nothing.
                        if (glob.find('/') != std::string::npos) {
                          return "'" + glob + "' contains '/' (expected a glob on a single file name, e.g. \"*.lock\")";
                        }
                        return {};
                      });
}

std::vector<std::string> suffix_list(const YAML::Node& node) {
  return checked_list(node, "a list of name suffixes, e.g. [\".siginfo\", \".sig\"]", "a name suffix",
                      [](const std::string& suffix, const std::vector<std::string>& so_far) -> std::string {
                        if (suffix.empty()) return "empty suffix (expected a name suffix such as \".sig\")";
                        if (suffix.find('/') != std::string::npos || suffix.find('\0') != std::string::npos) {
                          return "'" + suffix + "' contains '/' (expected the end of a file name, e.g. \".sig\")";
                        }
                        if (std::find(so_far.begin(), so_far.end(), suffix) != so_far.end()) {
                          return "'" + suffix + "' is listed twice (list each suffix once)";
                        }
                        return {};
                      });
}

IoUring io_uring_mode(const YAML::Node& node) {
  const std::string expected = "auto, on or off";
  const std::string text = scalar_text(node, expected);
  if (text == "auto") return IoUring::automatic;
  if (text == "on") return IoUring::on;
  if (text == "off") return IoUring::off;
  throw std::invalid_argument("unknown io-uring mode '" + text + "' (expected " + expected + ")");
}

std::string log_level(const YAML::Node& node) {
  static const std::vector<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  const std::string expected = "one of trace, debug, info, warn, error";
  const std::string text = scalar_text(node, expected);
  if (std::find(levels.begin(), levels.end(), text) == levels.end()) {
    throw std::invalid_argument("unknown log level '" + text + "' (expected " + expected + ")");
  }
  return text;
}

// A group name from the group database, or a numeric gid; empty for none.
std::optional<unsigned> group_id(const std::string& text) {
  if (text.empty()) return std::nullopt;
  if (text.find_first_not_of("0123456789") == std::string::npos && text.size() < 10) {
    return static_cast<unsigned>(std::stoul(text));
  }
  std::vector<char> buf(16384);
  struct group entry;
  struct group* found = nullptr;
  if (getgrnam_r(text.c_str(), &entry, buf.data(), buf.size(), &found) != 0 || !found) {
    throw std::invalid_argument("unknown group '" + text +
                                "' (expected a group name from the group database, e.g. one made with "
                                "`groupadd cachectl`, or a numeric gid)");
  }
  return static_cast<unsigned>(found->gr_gid);
}

std::string absolute_path(const YAML::Node& node) {
  if (node.IsNull()) return "";
  const std::string text = scalar_text(node, "an absolute path");
  if (text.empty()) return "";  // not given (what to_yaml writes for it)
  if (text[0] != '/') throw std::invalid_argument("'" + text + "' is not an absolute path (expected one starting with /)");
  return text;
}

using Setter = std::function<void(Config&, const YAML::Node&)>;

struct KnownKey {
  std::string_view name;  // dotted: "section.key"
  Setter set;
};

using std::chrono::milliseconds;
using namespace std::chrono_literals;

const std::vector<KnownKey>& known_keys() {
  static const std::vector<KnownKey> keys = {
      {"layout.depth", [](Config& c, const YAML::Node& v) { c.layout.depth = int_in_range(v, 1, 8); }},
      {"layout.keep", [](Config& c, const YAML::Node& v) { c.layout.keep = glob_list(v); }},
      {"layout.group-suffixes",
       [](Config& c, const YAML::Node& v) { c.layout.group_suffixes = suffix_list(v); }},
      {"index.flush-interval",
       [](Config& c, const YAML::Node& v) { c.index.flush_interval = duration_in_range(v, 10ms, 1h); }},
      {"index.atime-precision",
       [](Config& c, const YAML::Node& v) { c.index.atime_precision = duration_in_range(v, 0ms, 24h); }},
      {"fuse.threads", [](Config& c, const YAML::Node& v) { c.fuse.threads = int_in_range(v, 1, 64); }},
      {"fuse.entry-timeout",
       [](Config& c, const YAML::Node& v) { c.fuse.entry_timeout = duration_in_range(v, 0ms, 24h * 30); }},
      {"fuse.attr-timeout",
       [](Config& c, const YAML::Node& v) { c.fuse.attr_timeout = duration_in_range(v, 0ms, 24h * 30); }},
      {"fuse.allow-other", [](Config& c, const YAML::Node& v) { c.fuse.allow_other = boolean(v); }},
      {"fuse.max-open-nodes",
       [](Config& c, const YAML::Node& v) { c.fuse.max_open_nodes = int_in_range(v, 64, 1 << 24); }},
      {"fuse.io-uring", [](Config& c, const YAML::Node& v) { c.fuse.io_uring = io_uring_mode(v); }},
      {"quota.max-size",
       [](Config& c, const YAML::Node& v) {
         const std::string expected = "a size such as 100G, a percentage such as 80%, or 'unlimited'";
         SizeLimit limit = parse_size_limit(scalar_text(v, expected), true);
         if (limit.kind == SizeLimit::Kind::bytes && limit.bytes == 0) {
           throw std::invalid_argument("0 would evict every artifact (expected " + expected + ")");
         }
         c.quota.max_size = limit;
       }},
      {"quota.min-free",
       [](Config& c, const YAML::Node& v) {
         c.quota.min_free = parse_size_limit(scalar_text(v, "a size such as 10G or a percentage such as 5%"), false);
       }},
      {"quota.low-watermark",
       [](Config& c, const YAML::Node& v) { c.quota.low_watermark = fraction_in_range(v, 0.5, 1.0); }},
      {"quota.min-age", [](Config& c, const YAML::Node& v) { c.quota.min_age = duration_in_range(v, 0ms, 24h * 365); }},
      {"quota.check-interval",
       [](Config& c, const YAML::Node& v) { c.quota.check_interval = duration_in_range(v, 100ms, 24h); }},
      {"quota.hard-limit", [](Config& c, const YAML::Node& v) { c.quota.hard_limit = boolean(v); }},
      {"control.group",
       [](Config& c, const YAML::Node& v) {
         c.control.group = v.IsNull() ? "" : scalar_text(v, "a group name or a numeric gid");
         c.control.gid = group_id(c.control.group);
       }},
      {"mount.store", [](Config& c, const YAML::Node& v) { c.mount.store = absolute_path(v); }},
      {"mount.point", [](Config& c, const YAML::Node& v) { c.mount.point = absolute_path(v); }},
      {"mount.confine", [](Config& c, const YAML::Node& v) { c.mount.confine = boolean(v); }},
      {"log.level", [](Config& c, const YAML::Node& v) { c.log.level = log_level(v); }},
  };
  return keys;
}

const std::vector<std::string>& section_names() {
  static const std::vector<std::string> sections = {"layout", "index", "fuse", "quota", "control", "mount", "log"};
  return sections;
}

const KnownKey* find_key(const std::string& dotted) {
  for (const KnownKey& key : known_keys()) {
    if (key.name == dotted) return &key;
  }
  return nullptr;
}

bool is_section(const std::string& name) {
  const auto& sections = section_names();
  return std::find(sections.begin(), sections.end(), name) != sections.end();
}

std::string parent_of(std::string_view dotted) {
  const auto dot = dotted.rfind('.');
  return dot == std::string_view::npos ? std::string() : std::string(dotted.substr(0, dot));
}

std::string leaf_of(std::string_view dotted) {
  const auto dot = dotted.rfind('.');
  return std::string(dot == std::string_view::npos ? dotted : dotted.substr(dot + 1));
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "did you mean ...?" for a key nobody knows. A sibling is named by its short
// name; a key that belongs in another section by its dotted name, so that
// "max-size" at the top level points to "quota.max-size".
// On the command line keys are always written dotted, so `always_dotted`
// names the suggestion in full there.
std::string unknown_key_hint(const std::string& parent, const std::string& name, bool always_dotted = false) {
  std::vector<std::string> candidates(section_names());
  for (const KnownKey& key : known_keys()) candidates.emplace_back(key.name);

  std::string best;
  std::size_t best_distance = std::string::npos;
  for (const std::string& candidate : candidates) {
    const bool sibling = parent_of(candidate) == parent;
    // Another section's key costs one extra edit, so a sibling wins a tie.
    const std::size_t distance = edit_distance(name, leaf_of(candidate)) + (sibling ? 0 : 1);
    if (distance < best_distance) {
      best_distance = distance;
      best = sibling && !always_dotted ? leaf_of(candidate) : candidate;
    }
  }
  if (best_distance <= std::max<std::size_t>(2, name.size() / 3)) return "did you mean '" + best + "'?";

  std::string siblings;
  for (const std::string& candidate : candidates) {
    if (parent_of(candidate) != parent) continue;
    siblings += (siblings.empty() ? "" : ", ") + leaf_of(candidate);
  }
  if (siblings.empty()) {
    std::string sections;
    for (const std::string& section : section_names()) sections += (sections.empty() ? "" : ", ") + section;
    return "expected a key in one of the sections " + sections;
  }
  return "expected one of: " + siblings;
}

// Where values come from: a file, whose line numbers come from YAML marks, or
// a --set override, whose "line" is its position among the overrides.
struct Origin {
  std::string name;
  int fixed_line = 0;
};

class Loader {
 public:
  explicit Loader(Config& config) : config_(config) {}

  void problem(const Origin& origin, int line, const std::string& key, const std::string& what) {
    const int shown = origin.fixed_line > 0 ? origin.fixed_line : line;
    problems_.push_back(origin.name + ":" + std::to_string(shown) + ": " + key + ": " + what);
  }

  void file_problem(const std::string& path, const std::string& what) { problems_.push_back(path + ": " + what); }

  // Applies `node` as the value of `path` ("" is the whole document, a
  // section name a section, otherwise a leaf). `key_line` is where the key
  // was written: a missing value has no line of its own.
  void apply(const Origin& origin, const std::string& path, const YAML::Node& node, int key_line) {
    if (const KnownKey* key = find_key(path)) {
      apply_leaf(origin, *key, node, key_line);
      return;
    }
    if (!path.empty() && !is_section(path)) {
      problem(origin, key_line, path, "unknown key (" + unknown_key_hint(parent_of(path), leaf_of(path)) + ")");
      return;
    }
    // An empty file or an empty section: all defaults.
    if (node.IsNull()) return;
    const std::string shown_key = path.empty() ? "(top level)" : path;
    if (!node.IsMap()) {
      problem(origin, line_of(node, key_line), shown_key,
              "got " + describe_type(node) + " (expected a map of keys, e.g. " +
                  (path.empty() ? std::string("'quota:' with 'max-size: 100G' under it") : "'" + first_child(path) + ": ...'") + ")");
      return;
    }
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // Copies: yaml-cpp's iterator hands out a temporary pair.
      const YAML::Node key_node = it->first;
      const YAML::Node value_node = it->second;
      const int line = line_of(key_node, key_line);
      if (!key_node.IsScalar()) {
        problem(origin, line, shown_key, "a key must be a plain name, got " + describe_type(key_node));
        continue;
      }
      const std::string child = path.empty() ? key_node.Scalar() : path + "." + key_node.Scalar();
      if (!seen.insert(key_node.Scalar()).second) {
        // yaml-cpp keeps both; which one wins would be a guess.
        problem(origin, line, child, "duplicate key (expected each key once; remove one of them)");
        continue;
      }
      apply(origin, child, value_node, line);
    }
  }

  std::vector<std::string>& problems() { return problems_; }

 private:
  static int line_of(const YAML::Node& node, int fallback) {
    // yaml-cpp marks a missing value at the next token, often a later line.
    if (!node.IsDefined() || node.IsNull() || node.Mark().is_null()) return fallback;
    return node.Mark().line + 1;
  }

  static std::string first_child(const std::string& section) {
    for (const KnownKey& key : known_keys()) {
      if (parent_of(key.name) == section) return leaf_of(key.name);
    }
    return "key";
  }

  void apply_leaf(const Origin& origin, const KnownKey& key, const YAML::Node& node, int key_line) {
    const std::string name(key.name);
    try {
      key.set(config_, node);
    } catch (const std::invalid_argument& error) {
      problem(origin, line_of(node, key_line), name, error.what());
    } catch (const ValueProblems& inner) {
      for (const auto& item : inner.items) {
        const int line = item.mark.is_null() ? line_of(node, key_line) : item.mark.line + 1;
        problem(origin, line, name + item.key_suffix, item.what);
      }
    } catch (const YAML::Exception& error) {
      problem(origin, line_of(node, key_line), name, std::string("unreadable value: ") + error.what());
    }
  }

  Config& config_;
  std::vector<std::string> problems_;
};

void load_file(Loader& loader, const std::filesystem::path& file) {
  const std::string name = file.string();
  std::error_code error;
  if (std::filesystem::is_directory(file, error)) {
    loader.file_problem(name, "is a directory (expected a YAML configuration file)");
    return;
  }
  std::ifstream stream(file, std::ios::binary);
  if (!stream) {
    loader.file_problem(name, std::string("cannot open: ") + std::strerror(errno) + " (expected a readable YAML configuration file)");
    return;
  }
  std::ostringstream content;
  content << stream.rdbuf();
  if (stream.bad()) {
    loader.file_problem(name, std::string("cannot read: ") + std::strerror(errno));
    return;
  }

  std::vector<YAML::Node> documents;
  const Origin origin{name};
  try {
    documents = YAML::LoadAll(content.str());
  } catch (const YAML::ParserException& syntax) {
    const int line = syntax.mark.is_null() ? 1 : syntax.mark.line + 1;
    const std::string column = syntax.mark.is_null() ? "" : " at column " + std::to_string(syntax.mark.column + 1);
    loader.problem(origin, line, "YAML syntax error" + column, syntax.msg + " (fix the YAML syntax; the rest of the file was not checked)");
    return;
  }
  if (documents.empty()) return;
  if (documents.size() > 1) {
    const YAML::Mark second = documents[1].Mark();
    loader.problem(origin, second.is_null() ? 1 : second.line + 1, "(top level)",
                   "more than one YAML document (expected a single document; remove the extra '---')");
  }
  loader.apply(origin, "", documents.front(), 1);
}

void apply_override(Loader& loader, const std::string& text, int position) {
  const Origin origin{"--set", position};
  const auto equals = text.find('=');
  if (equals == std::string::npos || equals == 0) {
    loader.problem(origin, 0, "'" + text + "'", "not an override (expected KEY=VALUE, e.g. quota.max-size=100G)");
    return;
  }
  const std::string key = text.substr(0, equals);
  const std::string value = text.substr(equals + 1);
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::ParserException& syntax) {
    // Usually a glob: a leading '*' is a YAML alias unless quoted.
    const std::string example = key == "layout.keep" ? "layout.keep='[\"*.lock\"]'" : key + "='\"" + value + "\"'";
    loader.problem(origin, 0, key, "value '" + value + "' is not valid YAML: " + syntax.msg + " (quote it, e.g. " + example + ")");
    return;
  }
  if (!find_key(key) && !is_section(key)) {
    loader.problem(origin, 0, key, "unknown key (" + unknown_key_hint(parent_of(key), leaf_of(key), true) + ")");
    return;
  }
  loader.apply(origin, key, node, 0);
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(join_lines(problems)), problems_(std::move(problems)) {}

Config load(const std::optional<std::filesystem::path>& file, const std::vector<std::string>& overrides) {
  Config config;
  Loader loader(config);
  if (file) load_file(loader, *file);
  int position = 0;
  for (const std::string& text : overrides) apply_override(loader, text, ++position);
  if (!loader.problems().empty()) throw ConfigError(std::move(loader.problems()));
  return config;
}

std::string to_yaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::Comment("artifactfs configuration");
  out << YAML::BeginMap;

  out << YAML::Key << "layout" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "depth" << YAML::Value << config.layout.depth << YAML::Comment("1..8");
  out << YAML::Key << "keep" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& glob : config.layout.keep) out << glob;
  out << YAML::EndSeq;
  out << YAML::Key << "group-suffixes" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& suffix : config.layout.group_suffixes) out << suffix;
  out << YAML::EndSeq << YAML::EndMap;

  out << YAML::Key << "index" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "flush-interval" << YAML::Value << format_duration(config.index.flush_interval)
      << YAML::Comment("10ms..1h");
  out << YAML::Key << "atime-precision" << YAML::Value << format_duration(config.index.atime_precision)
      << YAML::Comment("0ms..24h; 0: stat shows every flushed access");
  out << YAML::EndMap;

  out << YAML::Key << "fuse" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "threads" << YAML::Value << config.fuse.threads << YAML::Comment("1..64");
  out << YAML::Key << "entry-timeout" << YAML::Value << format_duration(config.fuse.entry_timeout);
  out << YAML::Key << "attr-timeout" << YAML::Value << format_duration(config.fuse.attr_timeout);
  out << YAML::Key << "allow-other" << YAML::Value << config.fuse.allow_other;
  out << YAML::Key << "max-open-nodes" << YAML::Value << config.fuse.max_open_nodes
      << YAML::Comment("64..16777216; at most half the descriptor limit is used");
  out << YAML::Key << "io-uring" << YAML::Value
      << (config.fuse.io_uring == IoUring::on ? "on" : config.fuse.io_uring == IoUring::off ? "off" : "auto")
      << YAML::Comment("auto | on | off: requests through io_uring when the kernel offers it");
  out << YAML::EndMap;

  // to_chars gives the shortest text that reads back as the same double;
  // the emitter's default would print 0.90000000000000002.
  std::array<char, 64> watermark{};
  const auto written = std::to_chars(watermark.data(), watermark.data() + watermark.size(), config.quota.low_watermark);
  out << YAML::Key << "quota" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max-size" << YAML::Value << config.quota.max_size.to_string() << YAML::Comment("size | N% | unlimited");
  out << YAML::Key << "min-free" << YAML::Value << config.quota.min_free.to_string() << YAML::Comment("size | N%");
  out << YAML::Key << "low-watermark" << YAML::Value << std::string(watermark.data(), written.ptr)
      << YAML::Comment("0.5..1.0");
  out << YAML::Key << "min-age" << YAML::Value << format_duration(config.quota.min_age);
  out << YAML::Key << "check-interval" << YAML::Value << format_duration(config.quota.check_interval);
  out << YAML::Key << "hard-limit" << YAML::Value << config.quota.hard_limit
      << YAML::Comment("true: ENOSPC instead of going over the limit");
  out << YAML::EndMap;

  out << YAML::Key << "control" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "group" << YAML::Value << config.control.group << YAML::Comment("may pin and evict; empty: root and the store's owner only");
  out << YAML::EndMap;

  out << YAML::Key << "mount" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "store" << YAML::Value << config.mount.store
      << YAML::Comment("STORE when `artifactfs mount` is given none");
  out << YAML::Key << "point" << YAML::Value << config.mount.point
      << YAML::Comment("MOUNTPOINT when `artifactfs mount` is given none");
  out << YAML::Key << "confine" << YAML::Value << config.mount.confine
      << YAML::Comment("as root: read-only system, no /tmp or homes, once mounted");
  out << YAML::EndMap;

  out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << config.log.level << YAML::Comment("trace|debug|info|warn|error");
  out << YAML::EndMap;

  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace artifactfs::config

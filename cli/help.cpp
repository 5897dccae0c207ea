#include "cli/help.hpp"

#include <sstream>

namespace artifactfs::cli {

namespace {

std::string option_label(const OptionSpec& o) {
  std::string label = o.short_name ? std::string("-") + o.short_name + ", " : "    ";
  label += "--" + o.long_name;
  if (!o.value_name.empty()) label += " " + o.value_name;
  return label;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Text for roff: backslashes and hyphens escaped, no line starting a request.
std::string roff(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else out += c;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
  return out;
}

const OptionSpec kHelpOption{"help", 'h', "", "show this help and exit"};

}  // namespace

std::string help_text(const CommandSpec& c) {
  std::ostringstream out;
  out << "usage: artifactfs " << c.name << (c.synopsis.empty() ? "" : " " + c.synopsis) << "\n\n";
  out << c.summary << "\n";
  if (!c.description.empty()) out << "\n" << c.description << "\n";
  out << "\noptions:\n";
  std::size_t width = 0;
  for (const auto& o : c.options) width = std::max(width, option_label(o).size());
  width = std::max(width, option_label(kHelpOption).size());
  auto print = [&](const OptionSpec& o) {
    const std::string label = option_label(o);
    out << "  " << label << std::string(width - label.size() + 2, ' ');
    bool first = true;
    for (const auto& line : lines_of(o.help)) {
      if (!first) out << "  " << std::string(width + 2, ' ');
      out << line << "\n";
      first = false;
    }
  };
  for (const auto& o : c.options) print(o);
  print(kHelpOption);
  if (!c.exit_status.empty()) out << "\nexit status:\n" << c.exit_status;
  if (!c.examples.empty()) out << "\nexamples:\n" << c.examples;
  return out.str();
}

std::string overview_text(const std::vector<CommandSpec>& commands) {
  std::ostringstream out;
  out << "usage: artifactfs COMMAND [OPTIONS] [ARGUMENTS]\n\n"
         "A FUSE file system that gives a build tool's cache a quota with least-recently-used expiry.\n\n"
         "commands:\n";
  std::size_t width = 0;
  for (const auto& c : commands) width = std::max(width, c.name.size());
  for (const auto& c : commands) out << "  " << c.name << std::string(width - c.name.size() + 3, ' ') << c.summary << "\n";
  out << "\nRun `artifactfs COMMAND --help` for a command's options and exit status.\n"
         "Also: artifactfs --version\n";
  return out.str();
}

std::string man_page(const CommandSpec* c, const std::vector<CommandSpec>& commands, const std::string& version) {
  std::ostringstream out;
  const std::string title = c ? "ARTIFACTFS-" : "ARTIFACTFS";
  std::string upper;
  if (c) {
    for (char ch : c->name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  out << ".TH " << title << upper << " 1 \"\" \"artifactfs " << version << "\" \"artifactfs manual\"\n";
  out << ".SH NAME\n";
  if (!c) {
    out << "artifactfs \\- a file system that gives a build cache a quota with least\\-recently\\-used expiry\n";
    out << ".SH SYNOPSIS\n.B artifactfs\n.I COMMAND\n[\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]\n";
    out << ".SH COMMANDS\n";
    for (const auto& cmd : commands) {
      out << ".TP\n\\fBartifactfs\\-" << roff(cmd.name) << "\\fR(1)\n" << roff(cmd.summary) << "\n";
    }
    out << ".SH SEE ALSO\n\\fBmount.artifactfs\\fR(8), \\fBsystemctl\\fR(1)\n";
    return out.str();
  }
  out << "artifactfs\\-" << roff(c->name) << " \\- " << roff(c->summary) << "\n";
  out << ".SH SYNOPSIS\n.B artifactfs " << roff(c->name) << "\n" << roff(c->synopsis) << "\n";
  out << ".SH DESCRIPTION\n";
  for (const auto& line : lines_of(c->description)) out << (line.empty() ? ".PP" : roff(line)) << "\n";
  out << ".SH OPTIONS\n";
  auto option = [&](const OptionSpec& o) {
    out << ".TP\n";
    if (o.short_name) out << "\\fB\\-" << o.short_name << "\\fR, ";
    out << "\\fB\\-\\-" << roff(o.long_name) << "\\fR";
    if (!o.value_name.empty()) out << " \\fI" << roff(o.value_name) << "\\fR";
    out << "\n";
    for (const auto& line : lines_of(o.help)) out << roff(line) << "\n";
  };
  for (const auto& o : c->options) option(o);
  option(kHelpOption);
  if (!c->exit_status.empty()) {
    out << ".SH \"EXIT STATUS\"\n";
    for (const auto& line : lines_of(c->exit_status)) {
      auto text = line.substr(line.find_first_not_of(' '));
      auto space = text.find(' ');
      out << ".TP\n.B " << roff(text.substr(0, space)) << "\n"
          << roff(space == std::string::npos ? "" : text.substr(text.find_first_not_of(' ', space))) << "\n";
    }
  }
  if (!c->examples.empty()) {
    out << ".SH EXAMPLES\n.nf\n";
    for (const auto& line : lines_of(c->examples)) out << roff(line) << "\n";
    out << ".fi\n";
  }
  out << ".SH SEE ALSO\n\\fBartifactfs\\fR(1)\n";
  return out.str();
}

}  // namespace artifactfs::cli

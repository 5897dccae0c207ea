// Exit statuses shared by every command (each command's --help lists the
// ones it uses).
#pragma once

namespace artifactfs::cli::exit_code {

inline constexpr int ok = 0;
inline constexpr int failure = 1;       // an error, or some keys not acted on
inline constexpr int usage = 2;         // bad command line or configuration
inline constexpr int not_allowed = 3;   // the caller is not an operator
inline constexpr int not_running = 4;   // the command needs the daemon, which is not running
inline constexpr int differences = 5;   // fsck: the index and the data tree differ
inline constexpr int repaired = 6;      // fsck --repair: they differed, the index was rebuilt

}  // namespace artifactfs::cli::exit_code

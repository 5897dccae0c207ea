#include "fs/service_notify.hpp"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>

namespace artifactfs::fs::service {

namespace {

void send(const std::string& message) {
  // unset_environment = 0: the reload and stop notices use it again.
  sd_notify(0, message.c_str());
}

std::uint64_t monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}

}  // namespace

void ready(const std::string& status) { send("READY=1\nSTATUS=" + status); }

void status(const std::string& status) { send("STATUS=" + status); }

// MONOTONIC_USEC lets systemd (253 and later) match the reload it asked for.
void reloading() { send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) + "\nSTATUS=reloading"); }

void stopping() { send("STOPPING=1\nSTATUS=unmounting"); }

}  // namespace artifactfs::fs::service

// Tells a service manager how the daemon is doing (sd_notify(3)): READY=1
// once the mount is live, STATUS= with the usage, RELOADING=1 while a SIGHUP
// is applied, STOPPING=1 when it shuts down. Without $NOTIFY_SOCKET (not
// started by systemd as Type=notify) every call does nothing.
#pragma once

#include <string>

namespace artifactfs::fs::service {

void ready(const std::string& status);
void status(const std::string& status);
void reloading();
void stopping();

}  // namespace artifactfs::fs::service

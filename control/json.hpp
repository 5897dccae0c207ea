// The reports as JSON: what the control channel carries and what `--json`
// prints. Times are nanoseconds since the epoch (integers), sizes bytes;
// an absent optional value is null.
#pragma once

#include <nlohmann/json.hpp>

#include "control/reports.hpp"

namespace artifactfs::control {

void to_json(nlohmann::json& j, const Unevictable& u);
void from_json(const nlohmann::json& j, Unevictable& u);
void to_json(nlohmann::json& j, const StatusReport& s);
void from_json(const nlohmann::json& j, StatusReport& s);
void to_json(nlohmann::json& j, const ArtifactRow& r);
void from_json(const nlohmann::json& j, ArtifactRow& r);
void to_json(nlohmann::json& j, const NamespaceRow& r);
void from_json(const nlohmann::json& j, NamespaceRow& r);
void to_json(nlohmann::json& j, const ActionResult& r);
void from_json(const nlohmann::json& j, ActionResult& r);
void to_json(nlohmann::json& j, const CleanupReport& r);
void from_json(const nlohmann::json& j, CleanupReport& r);

}  // namespace artifactfs::control

namespace artifactfs::index {
void to_json(nlohmann::json& j, const EvictionEntry& e);
void from_json(const nlohmann::json& j, EvictionEntry& e);
}  // namespace artifactfs::index

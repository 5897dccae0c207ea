#include "fs/live_artifact.hpp"

namespace artifactfs::fs {

std::shared_ptr<LiveArtifact> ArtifactRegistry::get(index::ArtifactId id) {
  std::lock_guard lock(mutex_);
  auto& slot = live_[id];
  if (!slot) slot = std::make_shared<LiveArtifact>(id);
  return slot;
}

std::shared_ptr<LiveArtifact> ArtifactRegistry::find(index::ArtifactId id) const {
  std::lock_guard lock(mutex_);
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second;
}

void ArtifactRegistry::erase(index::ArtifactId id) {
  std::lock_guard lock(mutex_);
  live_.erase(id);
}

Lease::Lease(std::shared_ptr<LiveArtifact> artifact) : artifact_(std::move(artifact)) {
  if (!artifact_) return;
  std::lock_guard lock(artifact_->mutex);
  if (artifact_->evicted) {
    valid_ = false;
    artifact_.reset();
    return;
  }
  ++artifact_->leases;
}

Lease::Lease(Lease&& other) noexcept : artifact_(std::move(other.artifact_)), valid_(other.valid_) {
  other.artifact_.reset();
}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    artifact_ = std::move(other.artifact_);
    valid_ = other.valid_;
    other.artifact_.reset();
  }
  return *this;
}

Lease::~Lease() { release(); }

void Lease::release() {
  if (!artifact_) return;
  std::lock_guard lock(artifact_->mutex);
  --artifact_->leases;
  artifact_.reset();
}

}  // namespace artifactfs::fs

#include "fs/live_artifact.hpp"

#include <algorithm>

namespace artifactfs::fs {

void LiveArtifact::add_member_locked(const std::shared_ptr<Inode>& inode) {
  if (members.size() >= prune_at_) {
    std::erase_if(members, [](const std::weak_ptr<Inode>& m) { return m.expired(); });
    prune_at_ = std::max<std::size_t>(64, members.size() * 2);
  }
  members.push_back(inode);
}

void LiveArtifact::add_root_locked(const std::shared_ptr<Inode>& inode) {
  std::erase_if(roots, [](const std::weak_ptr<Inode>& r) { return r.expired(); });
  for (const auto& r : roots) {
    if (r.lock() == inode) return;
  }
  roots.push_back(inode);
}

std::vector<std::shared_ptr<Inode>> LiveArtifact::live_roots_locked() const {
  std::vector<std::shared_ptr<Inode>> out;
  for (const auto& r : roots) {
    if (auto inode = r.lock()) out.push_back(std::move(inode));
  }
  return out;
}

std::shared_ptr<LiveArtifact> ArtifactRegistry::get(index::ArtifactId id) {
  std::lock_guard lock(mutex_);
  auto& slot = live_[id];
  std::shared_ptr<LiveArtifact> live = slot.lock();
  if (live) return live;
  live = std::make_shared<LiveArtifact>(id);
  slot = live;
  if (live_.size() >= prune_at_) {
    std::erase_if(live_, [](const auto& entry) { return entry.second.expired(); });
    prune_at_ = std::max<std::size_t>(1024, live_.size() * 2);
  }
  return live;
}

std::shared_ptr<LiveArtifact> ArtifactRegistry::find(index::ArtifactId id) const {
  std::lock_guard lock(mutex_);
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second.lock();
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

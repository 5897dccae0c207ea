// See change_set.hpp.
#include "index/change_set.hpp"

namespace artifactfs::index {

std::vector<std::string> ChangeSet::begin(const std::vector<std::string>& keys) {
  std::unique_lock lock(mutex_);
  for (const auto& k : keys) keys_[k].active++;  // from now on no flush clears them
  std::vector<std::string> claimed;
  for (;;) {
    bool wait = false;
    for (const auto& k : keys) {
      Key& key = keys_[k];
      switch (key.state) {
        case State::persisted:
          break;
        case State::clearing:
          key.state = State::persisted;  // the flush has not decided: it keeps the row
          break;
        case State::writing: {
          bool mine = false;
          for (const auto& c : claimed) mine = mine || c == k;
          if (!mine) wait = true;
          break;
        }
        case State::absent:
        case State::deleting:
          key.state = State::writing;
          claimed.push_back(k);
          break;
      }
    }
    if (!wait) return claimed;
    // Another thread commits one of our rows; its outcome decides (a failed
    // write leaves the key absent and we claim it then).
    cv_.wait(lock);
  }
}

void ChangeSet::written(const std::vector<std::string>& claimed, bool ok) {
  {
    std::lock_guard lock(mutex_);
    for (const auto& k : claimed) {
      auto it = keys_.find(k);
      if (it == keys_.end()) continue;
      it->second.state = ok ? State::persisted : State::absent;
    }
  }
  cv_.notify_all();
}

void ChangeSet::end(const std::vector<std::string>& keys) {
  std::lock_guard lock(mutex_);
  for (const auto& k : keys) {
    auto it = keys_.find(k);
    if (it == keys_.end()) continue;
    if (it->second.active > 0) --it->second.active;
    forget_if_idle(it);
  }
}

void ChangeSet::persisted(const std::string& key, bool by_flush) {
  std::lock_guard lock(mutex_);
  Key& k = keys_[key];
  if (k.state == State::writing) return;
  if (by_flush && (k.state == State::clearing || k.state == State::deleting)) return;
  k.state = State::persisted;
}

std::vector<std::string> ChangeSet::take_clearable() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (auto& [k, key] : keys_) {
    if (key.state == State::persisted && key.active == 0) {
      key.state = State::clearing;
      out.push_back(k);
    }
  }
  return out;
}

bool ChangeSet::has_clearable() const {
  std::lock_guard lock(mutex_);
  for (const auto& [k, key] : keys_) {
    if (key.state == State::persisted && key.active == 0) return true;
  }
  return false;
}

std::vector<std::string> ChangeSet::confirm_deletions(const std::vector<std::string>& clearing) {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& k : clearing) {
    auto it = keys_.find(k);
    if (it == keys_.end()) continue;
    if (it->second.state == State::clearing || it->second.state == State::deleting) {
      it->second.state = State::deleting;
      out.push_back(k);
    }
  }
  return out;
}

void ChangeSet::deletions_committed(const std::vector<std::string>& clearing) {
  std::lock_guard lock(mutex_);
  for (const auto& k : clearing) {
    auto it = keys_.find(k);
    if (it == keys_.end()) continue;
    if (it->second.state == State::deleting) it->second.state = State::absent;
    forget_if_idle(it);
  }
}

void ChangeSet::deletions_aborted(const std::vector<std::string>& clearing) {
  std::lock_guard lock(mutex_);
  for (const auto& k : clearing) {
    auto it = keys_.find(k);
    if (it == keys_.end()) continue;
    if (it->second.state == State::clearing || it->second.state == State::deleting) {
      it->second.state = State::persisted;
    }
  }
}

void ChangeSet::reset() {
  {
    std::lock_guard lock(mutex_);
    for (auto it = keys_.begin(); it != keys_.end();) {
      if (it->second.state != State::writing) it->second.state = State::absent;
      if (it->second.active == 0 && it->second.state == State::absent) {
        it = keys_.erase(it);
      } else {
        ++it;
      }
    }
  }
  cv_.notify_all();
}

std::size_t ChangeSet::persisted_count() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [k, key] : keys_) n += key.state != State::absent && key.state != State::writing;
  return n;
}

void ChangeSet::forget_if_idle(std::unordered_map<std::string, Key>::iterator it) {
  if (it->second.active == 0 && it->second.state == State::absent) keys_.erase(it);
}

}  // namespace artifactfs::index

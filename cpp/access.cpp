#include "access.hpp"

#include <algorithm>
#include <utility>

namespace a0gw {

namespace {

// One step of a compiled glob.
enum class GlobStep { kLiteral, kOne, kFolder, kAny };

bool printable_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](unsigned char c) { return c >= 0x20 && c < 0x7F; });
}

// Compares without leaking where two equal-length strings differ.
bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view name) {
  // reachable[i]: the steps so far can match exactly name[0, i).  One pass
  // per step keeps this linear in the name, whatever the pattern.
  std::vector<char> reachable(name.size() + 1, 0);
  std::vector<char> next(name.size() + 1, 0);
  reachable[0] = 1;
  size_t at = 0;
  while (at < pattern.size()) {
    GlobStep step = GlobStep::kLiteral;
    char literal = pattern[at];
    if (pattern.compare(at, 2, "**") == 0) {
      step = GlobStep::kAny;
      at += 2;
    } else {
      if (literal == '*') step = GlobStep::kFolder;
      if (literal == '?') step = GlobStep::kOne;
      at += 1;
    }

    std::fill(next.begin(), next.end(), 0);
    bool run = false;  // For `*` and `**`: some earlier start is reachable.
    for (size_t i = 0; i <= name.size(); ++i) {
      switch (step) {
        case GlobStep::kLiteral:
          if (i < name.size() && reachable[i] && name[i] == literal) next[i + 1] = 1;
          break;
        case GlobStep::kOne:
          if (i < name.size() && reachable[i] && name[i] != '/') next[i + 1] = 1;
          break;
        case GlobStep::kFolder:
        case GlobStep::kAny:
          run = run || reachable[i];
          next[i] = run;
          if (step == GlobStep::kFolder && i < name.size() && name[i] == '/') run = false;
          break;
      }
    }
    std::swap(reachable, next);
  }
  return reachable[name.size()] != 0;
}

AccessRules::AccessRules(std::optional<std::string> token, std::vector<std::string> origins,
                         std::vector<std::string> allow_topics,
                         std::vector<std::string> deny_topics)
    : token_(std::move(token)),
      any_origin_(std::find(origins.begin(), origins.end(), "*") != origins.end()),
      origins_(std::move(origins)),
      allow_(std::move(allow_topics)),
      deny_(std::move(deny_topics)) {}

bool AccessRules::token_accepted(std::optional<std::string_view> credentials) const {
  if (!token_) return true;
  return credentials && constant_time_equal(*credentials, *token_);
}

std::optional<std::string_view> AccessRules::cors_origin(
    std::optional<std::string_view> origin) const {
  if (any_origin_) return std::string_view("*");
  if (!origin) return std::string_view();
  if (std::find(origins_.begin(), origins_.end(), *origin) != origins_.end()) return origin;
  return std::nullopt;
}

bool AccessRules::topic_allowed(std::string_view topic) const {
  if (allow_.empty() && deny_.empty()) return true;
  // Python matches code points, and `.` in its regex stops at a newline:
  // the two agree byte for byte on printable ASCII only.
  if (!printable_ascii(topic)) return false;
  auto matches = [topic](const std::string& glob) { return glob_match(glob, topic); };
  if (std::any_of(deny_.begin(), deny_.end(), matches)) return false;
  return allow_.empty() || std::any_of(allow_.begin(), allow_.end(), matches);
}

}  // namespace a0gw

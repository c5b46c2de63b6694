// The part of a0gw.policy.AccessPolicy that the native publish path enforces.
//
// The native path may only answer a request that the Python path would answer
// with success: every refusal is left to Python, which owns the error texts.
// So each check here answers "certainly allowed" or "let Python decide", and
// whatever it cannot judge exactly as Python would (unusual spellings of a
// header, names outside printable ASCII) goes to Python.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace a0gw {

// Whether `name` matches topic glob `pattern`, as a0gw.policy.glob_to_regex
// compiles it: `*` and `?` stay inside a folder, `**` crosses folders.
bool glob_match(std::string_view pattern, std::string_view name);

class AccessRules {
 public:
  // `token`: the bearer token every request must carry (printable ASCII), or
  // none.  `origins`: allowed Origin values as their bytes on the wire; "*"
  // allows any.  `allow_topics`, `deny_topics`: topic globs.
  AccessRules(std::optional<std::string> token, std::vector<std::string> origins,
              std::vector<std::string> allow_topics, std::vector<std::string> deny_topics);

  // Whether the credentials of a request's one `Authorization: Bearer`
  // header (nullopt: it has none) certainly pass the token check.
  bool token_accepted(std::optional<std::string_view> credentials) const;

  // The Access-Control-Allow-Origin value for a request from `origin`
  // (nullopt: no Origin header), "" for none; nullopt when the origin is
  // refused.
  std::optional<std::string_view> cors_origin(std::optional<std::string_view> origin) const;

  // Whether the topic globs certainly allow `topic`, a name already known to
  // be plain (no empty, "." or ".." parts, no leading slash).
  bool topic_allowed(std::string_view topic) const;

 private:
  std::optional<std::string> token_;
  bool any_origin_;
  std::vector<std::string> origins_;
  std::vector<std::string> allow_;
  std::vector<std::string> deny_;
};

}  // namespace a0gw

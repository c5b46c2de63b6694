// Opens the AlephZero objects that feed a Stream.  Each function creates the
// stream, starts its source (which begins calling deliver_* on an AlephZero
// thread) and returns it.  AlephZero's own errors (a bad topic or path) are
// raised as AlephZeroError with AlephZero's text.
#pragma once

#include <a0.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "stream.hpp"

namespace a0gw {

// An error AlephZero reported for what a client asked (bad topic, bad path).
struct AlephZeroError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::shared_ptr<Stream> open_subscriber(std::shared_ptr<Hub> hub, uint64_t id,
                                        const std::string& topic, a0::Reader::Options reader_opts,
                                        StreamOptions opts);

std::shared_ptr<Stream> open_reader(std::shared_ptr<Hub> hub, uint64_t id, const std::string& path,
                                    a0::Reader::Options reader_opts, StreamOptions opts);

}  // namespace a0gw

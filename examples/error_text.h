// The message of an exception as the command-line tools print it: libtorch's
// errors (c10::Error) without the C++ backtrace that their what() appends.
#pragma once

#include <exception>

#include <c10/util/Exception.h>

namespace lowbit {

inline const char* error_text(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

}  // namespace lowbit

// expect_error<E>(fn, needle): fn must throw an E whose message contains
// `needle` — errors are part of the contract, so tests check their words.
#pragma once

#include <exception>
#include <string>

#include <gtest/gtest.h>

namespace lowbit::testing {

template <typename E = std::exception, typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace lowbit::testing

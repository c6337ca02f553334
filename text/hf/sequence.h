// The Sequence normalizer, pre-tokenizer and decoder: stages of one kind
// applied in order. Each stage kind is a base class with
// `void apply(Value&) const` and a `Value` type.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

template <typename Stage>
class Sequence final : public Stage {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Stage>> steps) : steps_(std::move(steps)) {}
  void apply(typename Stage::Value& value) const override {
    for (const auto& step : steps_) step->apply(value);
  }

 private:
  std::vector<std::unique_ptr<Stage>> steps_;
};

// The Sequence whose stages are the array `field[key]`, each read by `read`
// (null stages are left out).
template <typename Stage, typename Read>
std::unique_ptr<Stage> read_sequence(const JsonField& field, const std::string& key, Read read) {
  const JsonField list = field.at(key);
  std::vector<std::unique_ptr<Stage>> steps;
  for (size_t i = 0; i < list.size(); ++i)
    if (std::unique_ptr<Stage> step = read(list.at(i))) steps.push_back(std::move(step));
  return std::make_unique<Sequence<Stage>>(std::move(steps));
}

}  // namespace lowbit::text::hf

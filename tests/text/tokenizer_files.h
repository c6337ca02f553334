// Small tokenizer.json files for the tests, written out key by key from the
// format (the Rust `tokenizers` library's serialization), with vocabularies
// small enough that every expected id can be worked out by hand.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/scratch_dir.h"

namespace lowbit::testing {

using nlohmann::json;

// GPT-2's byte-to-code-point table, from its definition in encoder.py: bytes
// '!'..'~', 0xA1..0xAC and 0xAE..0xFF are their own code points, the other 68
// take 256, 257, ... in byte order. Returned as UTF-8.
inline std::string byte_level(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) {
    const unsigned b = static_cast<unsigned char>(c);
    unsigned code_point = b;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
      code_point = 256;
      for (unsigned lower = 0; lower < b; ++lower)
        if (!((lower >= 0x21 && lower <= 0x7E) || (lower >= 0xA1 && lower <= 0xAC) || lower >= 0xAE))
          ++code_point;
    }
    if (code_point < 0x80) {
      out.push_back(static_cast<char>(code_point));
    } else {  // all below U+0800: two bytes
      out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
      out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    }
  }
  return out;
}

inline json added_token(int id, const std::string& content, bool special, bool lstrip = false,
                        bool rstrip = false, bool single_word = false, bool normalized = false) {
  return {{"id", id},         {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

// A post_processor that puts one special token before $A (Llama's BOS).
inline json bos_template(const std::string& bos, int bos_id) {
  return {{"type", "TemplateProcessing"},
          {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
          {"pair", json::array()},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
}

// The merges in either serialized form: "left right" strings (older files) or
// ["left", "right"] pairs (tokenizers >= 0.20).
inline json merges_json(const std::vector<std::pair<std::string, std::string>>& merges, bool as_pairs) {
  json out = json::array();
  for (const auto& [left, right] : merges)
    out.push_back(as_pairs ? json::array({left, right}) : json(left + " " + right));
  return out;
}

inline json bpe_model(json vocab, json merges) {
  return {{"type", "BPE"},           {"dropout", nullptr},           {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},       {"byte_fallback", false},       {"ignore_merges", false},
          {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
}

inline json tokenizer_json(json model) {
  return {{"version", "1.0"},      {"truncation", nullptr},   {"padding", nullptr},
          {"added_tokens", json::array()}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
          {"post_processor", nullptr}, {"decoder", nullptr},  {"model", std::move(model)}};
}

// Writes `content` as `name` in `dir` and returns the file's path.
inline std::string write_json(const ScratchDir& dir, const std::string& name, const json& content) {
  dir.write(name, content.dump(2));
  return dir.file(name);
}

}  // namespace lowbit::testing

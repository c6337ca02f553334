// The BPE model of a tokenizer.json (models/bpe/model.rs): a vocabulary, merges
// ranked by their order in the file, and the options byte_fallback, unk_token,
// fuse_unk, ignore_merges, continuing_subword_prefix and end_of_word_suffix.
// A piece is split into characters, then the adjacent pair of lowest merge
// rank (leftmost among equals) is merged until no pair has a merge.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/hf/json_field.h"

namespace lowbit::text::hf {

class BpeModel {
 public:
  // `model` is the tokenizer.json's "model" object, of type BPE.
  explicit BpeModel(const JsonField& model);

  // Appends the ids of one pre-tokenized piece. Thread-safe.
  void tokenize(const std::string& piece, std::vector<int32_t>& ids) const;

  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;  // of the merged token
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  void read_vocab(const JsonField& vocab);
  void read_merges(const JsonField& merges);
  std::vector<int32_t> merge_word(const std::string& piece) const;
  int32_t unk_id() const;

  std::string file_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // "<0xHH>" tokens, -1 where missing

  // Results for pieces seen before, as the Rust library keeps (cache.rs).
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace lowbit::text::hf

// Trains a SentencePiece model on a text file (one sentence per line) through
// sentencepiece::SentencePieceTrainer, deterministically: the whole file is
// read in order (no sampling, no shuffling) and the random seed is fixed.
#pragma once

#include <string>

namespace lowbit::text {

struct SentencePieceTraining {
  // Share of characters the model must cover; rarer ones fall back to bytes
  // (with byte_fallback) or the unknown token. 1.0 suits alphabetic text.
  double character_coverage = 1.0;
  // Pieces "<0x00>".."<0xFF>" so that any text round-trips, as Llama's model has.
  bool byte_fallback = true;
  // Adds "<pad>" (id 3) after <unk> 0, <s> 1 and </s> 2.
  bool pad_token = false;
  // More threads train faster; results depend on the thread count.
  int num_threads = 1;
  // SentencePiece's normalization rule: "identity" keeps text as written;
  // "nmt_nfkc" (SentencePiece's own default) and the other built-in rules
  // store a precompiled_charsmap in the model.
  std::string normalization = "identity";
};

// Writes <model_prefix>.model and <model_prefix>.vocab and returns the model's
// path. model_type is "bpe" or "unigram". Text is kept as written (identity
// normalization unless options.normalization names another rule, whitespace
// untouched), so decode(encode(s)) == s. Failures
// throw an Error with SentencePiece's message; without SentencePiece in the
// build, an Error saying so.
std::string train_sentencepiece(const std::string& input_path, const std::string& model_prefix,
                                int vocab_size, const std::string& model_type = "bpe",
                                const SentencePieceTraining& options = {});

}  // namespace lowbit::text

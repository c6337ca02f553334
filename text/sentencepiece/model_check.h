// Checks a SentencePiece .model file before libsentencepiece sees it: the
// protobuf wire format of its ModelProto, its pieces, and the normalization
// tries (precompiled_charsmap) that libsentencepiece walks without bounds
// checks. Needs neither protobuf nor SentencePiece, so it can be fuzzed alone.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace lowbit::text {

struct SentencePieceModelSummary {
  size_t pieces = 0;
  // Double-array units of each spec's charsmap trie; 0 where it has none.
  size_t normalizer_trie_units = 0;
  size_t denormalizer_trie_units = 0;
};

// The bytes of a .model file are refused (an Error naming `file`, the field,
// its file offset, and what was expected and found) unless every read that
// libsentencepiece's loading, normalization and denormalization make from
// them stays inside them. Everything SentencePiece's trainer writes passes.
SentencePieceModelSummary check_sentencepiece_model(std::string_view bytes, const std::string& file);

// Reads `path` (refusing a file over 1 GiB before reading it; real models are
// under 10 MB) and checks it as above; returns the bytes.
std::string read_sentencepiece_model(const std::string& path);

}  // namespace lowbit::text

// Text for subword language models (Hugging Face checkpoints): records from
// JSONL ({"text": ...} or {"prompt": ..., "response": ...}) or plain text,
// tokenized by the checkpoint's tokenizer and packed into fixed-length
// sequences whose labels cover only what the loss should learn (a response,
// never its prompt).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace lowbit::data {

// One training example: `prompt` is context only (no loss on its tokens),
// `text` is learned. A plain document has an empty prompt.
struct TextRecord {
  std::string prompt;
  std::string text;
};

struct RecordFormat {
  std::string text_key = "text";
  std::string prompt_key = "prompt";
  std::string response_key = "response";
  // How a prompt is shown to the model: every "{prompt}" is replaced by the
  // record's prompt (a plain prompt/response template, not a chat template).
  std::string prompt_template = "{prompt}\n";
};

// Every non-blank line of `path` is one JSON object holding either a string
// under text_key, or strings under prompt_key and response_key. Errors name
// "<path>:<line>" and the key, and say what was expected.
std::vector<TextRecord> read_jsonl(const std::string& path, const RecordFormat& format = {});

// A plain text file: documents separated by one or more blank lines (lines of
// whitespace only); each document keeps its own line breaks.
std::vector<TextRecord> read_text_documents(const std::string& path);

// Documents as records without prompts (e.g. read_kjv, read_fortunes).
std::vector<TextRecord> as_records(const std::vector<std::string>& documents);

// Records in the same train/validation split as split_documents.
struct RecordSplit {
  std::vector<TextRecord> train, valid;
};
RecordSplit split_records(const std::vector<TextRecord>& records, double valid_fraction);

using Encoder = std::function<std::vector<int32_t>(const std::string&)>;

// Records tokenized and concatenated: [bos] prompt text [eos] per record
// (bos/eos when given). `learn` marks the tokens a model should predict: the
// text's and the eos, never bos or prompt tokens. Prompt and text are encoded
// separately, so the boundary between them is exact.
struct TokenStream {
  torch::Tensor ids;    // int64 [n]
  torch::Tensor learn;  // bool [n]
};
TokenStream tokenize_records(const std::vector<TextRecord>& records, const Encoder& encode,
                             std::optional<int64_t> bos, std::optional<int64_t> eos);

// Sequence packing: the stream cut into consecutive windows of block + 1
// tokens (window k starts at k * block), input the first block tokens, labels
// the last block with kIgnore where the token is not learned (the value
// torch's cross_entropy ignores by default).
constexpr int64_t kIgnore = -100;
struct PackedBatch {
  torch::Tensor input;   // int64 [batch, block]
  torch::Tensor labels;  // int64 [batch, block]
};
int64_t packed_windows(const TokenStream& stream, int64_t block);
// Training micro-batches: windows in a fresh shuffled order per epoch
// (epoch_permutation of (seed, epoch)), so batch `index` is a pure function
// of seed and index. The epoch's order is kept between calls, as
// ImageBatches keeps it: consecutive batches do not reshuffle.
class PackedBatches {
 public:
  PackedBatches(TokenStream stream, int64_t block, int64_t batch, uint64_t seed);
  int64_t windows() const { return windows_; }
  // Window positions index * batch ... (index + 1) * batch - 1 of the
  // concatenated epochs (a batch may straddle two epochs).
  PackedBatch batch(int64_t index);

 private:
  const torch::Tensor& order(int64_t epoch);

  TokenStream stream_;
  int64_t block_, batch_, windows_;
  uint64_t seed_;
  int64_t epoch_ = -1;  // the epoch whose permutation is cached
  torch::Tensor order_;
};
// Windows [first, first + count) in order (evaluation).
PackedBatch packed_range(const TokenStream& stream, int64_t block, int64_t first, int64_t count);

}  // namespace lowbit::data

// Real text for the character-level models: the King James Bible (Debian's
// bible-kjv) and the fortune cookies of Debian's fortunes package, a fixed
// character vocabulary shared by both (a model trained on one can be fine-tuned
// on the other), a document-level train/validation split, and (input, target)
// window batches that are a pure function of (seed, batch index).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace lowbit::data {

// Newline, printable ASCII and one id for everything else. A fixed table, not
// one built from the data, so every corpus maps to the same ids.
struct CharVocab {
  static constexpr int64_t kNewline = 0;         // '\n'
  static constexpr int64_t kFirstPrintable = 1;  // ' ' .. '~' -> 1 .. 95
  static constexpr int64_t kUnknown = 96;        // any other byte (UTF-8, controls)
  static constexpr int64_t kSize = 97;

  // A tab counts as a space; bytes outside the table become kUnknown.
  static int64_t id(unsigned char c);
  // kUnknown decodes as '?'.
  static char character(int64_t id);
  static torch::Tensor encode(const std::string& text);  // int64 [text.size()]
  static std::string decode(const torch::Tensor& ids);   // any integer tensor
};

// The 31,102 verses of the KJV, each "verse text\n" without its reference, read
// through the package's `bible` program (its data file is a private compressed
// format) from `data_dir`/bible.data. A missing program or data file, or output
// that is not the whole Bible verse by verse, throws naming the file.
std::vector<std::string> read_kjv(const std::string& data_dir = "/usr/lib");

// The fortune files of `dir` (every file with a strfile index "<name>.dat" next
// to it, by name) or the listed `files`; each entry becomes "text\n%\n" (the
// file's own separator, so a model learns where a fortune ends). Each file's
// entry count is checked against the count in its .dat index, which catches a
// truncated or corrupt file.
std::vector<std::string> read_fortunes(const std::string& dir = "/usr/share/games/fortunes",
                                       const std::vector<std::string>& files = {});

struct TextSplit {
  torch::Tensor train;  // int64 ids, the training documents concatenated
  torch::Tensor valid;  // int64 ids, the validation documents concatenated
};

// The split rule of split_documents: document i goes to validation when
// floor((i+1)·f) exceeds floor(i·f). check_valid_fraction throws unless f is in [0, 1).
bool is_validation_document(size_t i, double valid_fraction);
void check_valid_fraction(double valid_fraction);

// Every document goes to validation or training whole; validation documents are
// spread evenly through the list (document i is chosen when floor((i+1)·f)
// exceeds floor(i·f)), so both halves see every book or fortune file.
TextSplit split_documents(const std::vector<std::string>& documents, double valid_fraction);

struct TextBatch {
  torch::Tensor input;   // int64 [batch, block]
  torch::Tensor target;  // int64 [batch, block]: input shifted left by one token
};

// Training batch number `index`: `batch` windows at uniform random starts drawn
// from a stream seeded by (seed, index), so the data position of a run is just
// its batch counter.
TextBatch sample_windows(const torch::Tensor& tokens, int64_t batch, int64_t block, uint64_t seed,
                         int64_t index);

// `count` windows at evenly spaced starts covering `tokens` (fewer when the
// text holds fewer): the same validation set at every evaluation.
TextBatch evaluation_windows(const torch::Tensor& tokens, int64_t block, int64_t count);

}  // namespace lowbit::data

#include "examples/data/text_corpus.h"

#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "examples/data/splitmix.h"

namespace lowbit::data {
namespace fs = std::filesystem;

int64_t CharVocab::id(unsigned char c) {
  if (c == '\n') return kNewline;
  if (c == '\t') c = ' ';
  if (c >= ' ' && c <= '~') return kFirstPrintable + (c - ' ');
  return kUnknown;
}

char CharVocab::character(int64_t id) {
  TORCH_CHECK(id >= 0 && id < kSize, "character id ", id, " is outside the vocabulary [0, ", kSize,
              ")");
  if (id == kNewline) return '\n';
  if (id == kUnknown) return '?';
  return char(' ' + (id - kFirstPrintable));
}

torch::Tensor CharVocab::encode(const std::string& text) {
  torch::Tensor ids = torch::empty({int64_t(text.size())}, torch::kInt64);
  int64_t* out = ids.data_ptr<int64_t>();
  for (size_t i = 0; i < text.size(); ++i) out[i] = id(static_cast<unsigned char>(text[i]));
  return ids;
}

std::string CharVocab::decode(const torch::Tensor& ids) {
  const torch::Tensor flat = ids.reshape({-1}).to(torch::kInt64).contiguous();
  const int64_t* in = flat.data_ptr<int64_t>();
  std::string text(size_t(flat.numel()), ' ');
  for (size_t i = 0; i < text.size(); ++i) text[i] = character(in[i]);
  return text;
}

namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// "Ge1:1 ", "1Co13:4 ", "Rev22:21 ": optional book number, letters, chapter:verse.
size_t reference_length(const std::string& line) {
  size_t i = 0;
  if (i < line.size() && line[i] >= '1' && line[i] <= '3') ++i;
  const size_t letters = i;
  while (i < line.size() && std::isalpha(static_cast<unsigned char>(line[i]))) ++i;
  if (i == letters) return 0;
  for (char sep : {':', ' '}) {
    const size_t digits = i;
    while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
    if (i == digits || i == line.size() || line[i] != sep) return 0;
    ++i;
  }
  return i;
}

std::string read_whole_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot open ", what, " '", path, "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  TORCH_CHECK(!in.bad(), "reading ", what, " '", path, "' failed");
  return bytes.str();
}

uint32_t be32(const unsigned char* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// The strfile(1) index header: version, number of strings, longest and
// shortest length, flags, delimiter; big-endian 32-bit words.
struct StrfileHeader {
  uint32_t count = 0;
  bool rotated = false;  // STR_ROTATED (0x4): the text is rot13-encoded
  char delimiter = '%';
};

StrfileHeader read_strfile_header(const std::string& path) {
  const std::string bytes = read_whole_file(path, "fortune index");
  TORCH_CHECK(bytes.size() >= 24, "fortune index '", path, "' holds ", bytes.size(),
              " bytes; a strfile header needs 24");
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const uint32_t version = be32(p);
  TORCH_CHECK(version == 1 || version == 2, "fortune index '", path, "' has strfile version ",
              version, "; expected 1 or 2");
  StrfileHeader header;
  header.count = be32(p + 4);
  header.rotated = (be32(p + 16) & 0x4u) != 0;
  header.delimiter = char(p[20]);
  return header;
}

char rot13(char c) {
  if (c >= 'a' && c <= 'z') return char('a' + (c - 'a' + 13) % 26);
  if (c >= 'A' && c <= 'Z') return char('A' + (c - 'A' + 13) % 26);
  return c;
}

void append_fortunes(const fs::path& file, std::vector<std::string>& out) {
  const std::string index = file.string() + ".dat";
  TORCH_CHECK(fs::is_regular_file(index), "fortune file '", file.string(),
              "' has no strfile index '", index, "' (create it with strfile)");
  const StrfileHeader header = read_strfile_header(index);
  std::string text = read_whole_file(file.string(), "fortune file");
  TORCH_CHECK(text.find('\0') == std::string::npos, "fortune file '", file.string(),
              "' contains NUL bytes; expected text");
  if (header.rotated) std::transform(text.begin(), text.end(), text.begin(), rot13);

  const std::string separator{header.delimiter};
  const size_t before = out.size();
  std::string entry;
  // strfile keeps every entry of at least one byte, even a lone blank line,
  // and drops empty ones (two separator lines in a row).
  bool has_line = false;
  auto finish_entry = [&] {
    if (has_line) out.push_back(entry + separator + "\n");
    entry.clear();
    has_line = false;
  };
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line == separator) {
      finish_entry();
      continue;
    }
    entry += line + "\n";
    has_line = true;
  }
  finish_entry();
  // A mismatch with strfile's count means the text and its index disagree,
  // most often because one of them is truncated.
  TORCH_CHECK(out.size() - before == header.count, "fortune file '", file.string(), "' holds ",
              out.size() - before, " entries but its index '", index, "' lists ", header.count,
              "; the file or its index is truncated or corrupt");
}

torch::Tensor concatenate(const std::vector<const std::string*>& parts) {
  size_t total = 0;
  for (const std::string* p : parts) total += p->size();
  torch::Tensor ids = torch::empty({int64_t(total)}, torch::kInt64);
  int64_t* out = ids.data_ptr<int64_t>();
  for (const std::string* p : parts) {
    for (char c : *p) *out++ = CharVocab::id(static_cast<unsigned char>(c));
  }
  return ids;
}

void check_tokens(const torch::Tensor& tokens, int64_t block, const char* what) {
  TORCH_CHECK(tokens.dim() == 1 && tokens.scalar_type() == torch::kInt64 && tokens.is_contiguous(),
              what, ": tokens must be a contiguous 1-D int64 tensor, got ", tokens.sizes(), " ",
              tokens.scalar_type());
  TORCH_CHECK(block >= 1, what, ": block must be at least 1, got ", block);
  TORCH_CHECK(tokens.numel() > block, what, ": ", tokens.numel(),
              " tokens are too few for one window of ", block, " + 1");
}

TextBatch gather_windows(const torch::Tensor& tokens, int64_t block,
                         const std::vector<int64_t>& starts) {
  const int64_t count = int64_t(starts.size());
  TextBatch batch{torch::empty({count, block}, torch::kInt64),
                  torch::empty({count, block}, torch::kInt64)};
  const int64_t* src = tokens.data_ptr<int64_t>();
  int64_t* input = batch.input.data_ptr<int64_t>();
  int64_t* target = batch.target.data_ptr<int64_t>();
  for (int64_t b = 0; b < count; ++b) {
    std::memcpy(input + b * block, src + starts[b], sizeof(int64_t) * size_t(block));
    std::memcpy(target + b * block, src + starts[b] + 1, sizeof(int64_t) * size_t(block));
  }
  return batch;
}

}  // namespace

std::vector<std::string> read_kjv(const std::string& data_dir) {
  const std::string data_file = (fs::path(data_dir) / "bible.data").string();
  TORCH_CHECK(fs::is_regular_file(data_file), "KJV data file '", data_file,
              "' not found (install the Debian package bible-kjv-text)");
  const std::string command = "bible -p " + shell_quote(data_dir) + " -f 'Gen1:1-Rev22:21' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  TORCH_CHECK(pipe, "cannot run the 'bible' program for '", data_file, "'");
  std::string output;
  char chunk[1 << 16];
  for (size_t got; (got = std::fread(chunk, 1, sizeof chunk, pipe.get())) > 0;) {
    output.append(chunk, got);
  }
  const int status = ::pclose(pipe.release());
  TORCH_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 127),
              "the 'bible' program was not found (install the Debian package bible-kjv)");
  const std::string tail = output.substr(output.size() > 300 ? output.size() - 300 : 0);
  TORCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reading the KJV from '", data_file,
              "' failed (is it truncated or corrupt?); the bible program said: ", tail);

  std::vector<std::string> verses;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const size_t skip = reference_length(line);
    TORCH_CHECK(skip > 0 && skip < line.size(), "KJV line ", verses.size() + 1, " from '",
                data_file, "' does not start with a verse reference: '", line.substr(0, 80), "'");
    verses.push_back(line.substr(skip) + "\n");
  }
  // 31,102 verses from Genesis 1:1 to Revelation 22:21 in the KJV.
  constexpr size_t kVerses = 31102;
  TORCH_CHECK(verses.size() == kVerses, "the KJV from '", data_file, "' holds ", verses.size(),
              " verses; expected ", kVerses, " (truncated or corrupt data file?)");
  return verses;
}

std::vector<std::string> read_fortunes(const std::string& dir,
                                       const std::vector<std::string>& files) {
  TORCH_CHECK(fs::is_directory(dir), "fortune directory '", dir,
              "' not found (install the Debian package fortunes)");
  std::vector<fs::path> paths;
  if (files.empty()) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      const fs::path& p = entry.path();
      if (p.extension() != ".dat" && entry.is_regular_file() && !entry.is_symlink() &&
          fs::exists(p.string() + ".dat")) {
        paths.push_back(p);
      }
    }
    std::sort(paths.begin(), paths.end());
    TORCH_CHECK(!paths.empty(), "fortune directory '", dir,
                "' holds no fortune files (text files with a .dat index)");
  } else {
    for (const std::string& name : files) {
      const fs::path p = fs::path(dir) / name;
      TORCH_CHECK(fs::is_regular_file(p), "fortune file '", p.string(), "' not found");
      paths.push_back(p);
    }
  }
  std::vector<std::string> entries;
  for (const fs::path& p : paths) append_fortunes(p, entries);
  return entries;
}

bool is_validation_document(size_t i, double valid_fraction) {
  return std::floor(double(i + 1) * valid_fraction) > std::floor(double(i) * valid_fraction);
}

void check_valid_fraction(double valid_fraction) {
  TORCH_CHECK(valid_fraction >= 0.0 && valid_fraction < 1.0,
              "validation fraction must be in [0, 1), got ", valid_fraction);
}

TextSplit split_documents(const std::vector<std::string>& documents, double valid_fraction) {
  check_valid_fraction(valid_fraction);
  std::vector<const std::string*> train, valid;
  for (size_t i = 0; i < documents.size(); ++i)
    (is_validation_document(i, valid_fraction) ? valid : train).push_back(&documents[i]);
  TORCH_CHECK(!train.empty(), "no training text among ", documents.size(), " documents");
  TORCH_CHECK(valid_fraction == 0.0 || !valid.empty(), "validation fraction ", valid_fraction,
              " of ", documents.size(), " documents selects none");
  return {concatenate(train), concatenate(valid)};
}

TextBatch sample_windows(const torch::Tensor& tokens, int64_t batch, int64_t block, uint64_t seed,
                         int64_t index) {
  check_tokens(tokens, block, "sample_windows");
  TORCH_CHECK(batch >= 1, "sample_windows: batch must be at least 1, got ", batch);
  TORCH_CHECK(index >= 0, "sample_windows: batch index must be non-negative, got ", index);
  SplitMix64 rng = stream(seed, uint64_t(index));
  const uint64_t choices = uint64_t(tokens.numel() - block);
  std::vector<int64_t> starts(static_cast<size_t>(batch));
  for (int64_t& s : starts) s = int64_t(rng.below(choices));
  return gather_windows(tokens, block, starts);
}

TextBatch evaluation_windows(const torch::Tensor& tokens, int64_t block, int64_t count) {
  check_tokens(tokens, block, "evaluation_windows");
  TORCH_CHECK(count >= 1, "evaluation_windows: count must be at least 1, got ", count);
  const int64_t n = tokens.numel();
  count = std::min(count, (n - 1) / block);
  const int64_t last = n - 1 - block;  // the largest valid start
  std::vector<int64_t> starts(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) starts[size_t(k)] = count == 1 ? 0 : k * last / (count - 1);
  return gather_windows(tokens, block, starts);
}

}  // namespace lowbit::data

#include "examples/data/token_corpus.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "examples/data/image_batches.h"
#include "examples/data/text_corpus.h"

namespace lowbit::data {
namespace {

std::string apply_template(const std::string& pattern, const std::string& prompt) {
  static const std::string kSlot = "{prompt}";
  std::string out;
  size_t from = 0;
  for (size_t at; (at = pattern.find(kSlot, from)) != std::string::npos; from = at + kSlot.size())
    out.append(pattern, from, at - from).append(prompt);
  return out.append(pattern, from, std::string::npos);
}

// The string under `key` of a JSONL record, or nullopt when absent.
std::optional<std::string> string_field(const nlohmann::json& record, const std::string& key,
                                        const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end()) return std::nullopt;
  TORCH_CHECK(it->is_string(), where, ": key \"", key, "\" must be a string, got ",
              it->type_name());
  return it->get<std::string>();
}

bool blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
}

std::ifstream open_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot open ", path, ": ", std::strerror(errno));
  return in;
}

}  // namespace

std::vector<TextRecord> read_jsonl(const std::string& path, const RecordFormat& format) {
  std::ifstream in = open_text(path);
  std::vector<TextRecord> records;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (blank(line)) continue;
    const std::string where = path + ":" + std::to_string(number);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      // Not only parse_error: a number beyond double's range is out_of_range.
      TORCH_CHECK(false, where, ": not valid JSON (", e.what(), ")");
    }
    TORCH_CHECK(record.is_object(), where, ": expected a JSON object, got ", record.type_name());
    const auto text = string_field(record, format.text_key, where);
    const auto prompt = string_field(record, format.prompt_key, where);
    const auto response = string_field(record, format.response_key, where);
    if (prompt || response) {
      TORCH_CHECK(prompt && response, where, ": a record with \"",
                  prompt ? format.prompt_key : format.response_key, "\" also needs \"",
                  prompt ? format.response_key : format.prompt_key, "\"");
      TORCH_CHECK(!text, where, ": a record holds either \"", format.text_key, "\" or \"",
                  format.prompt_key, "\"/\"", format.response_key, "\", not both");
      records.push_back({apply_template(format.prompt_template, *prompt), *response});
    } else {
      TORCH_CHECK(text, where, ": expected a string under \"", format.text_key, "\", or under \"",
                  format.prompt_key, "\" and \"", format.response_key, "\"");
      records.push_back({"", *text});
    }
  }
  TORCH_CHECK(!in.bad(), "error reading ", path);
  TORCH_CHECK(!records.empty(), path, " holds no records");
  return records;
}

std::vector<TextRecord> read_text_documents(const std::string& path) {
  std::ifstream in = open_text(path);
  std::vector<TextRecord> records;
  std::string line, document;
  const auto flush = [&] {
    if (!document.empty()) records.push_back({"", document});
    document.clear();
  };
  while (std::getline(in, line)) {
    if (blank(line)) {
      flush();
    } else {
      document += line;
      document += '\n';
    }
  }
  TORCH_CHECK(!in.bad(), "error reading ", path);
  flush();
  TORCH_CHECK(!records.empty(), path, " holds no text");
  return records;
}

std::vector<TextRecord> as_records(const std::vector<std::string>& documents) {
  std::vector<TextRecord> records;
  records.reserve(documents.size());
  for (const auto& d : documents) records.push_back({"", d});
  return records;
}

RecordSplit split_records(const std::vector<TextRecord>& records, double valid_fraction) {
  check_valid_fraction(valid_fraction);
  RecordSplit split;
  for (size_t i = 0; i < records.size(); ++i)
    (is_validation_document(i, valid_fraction) ? split.valid : split.train).push_back(records[i]);
  TORCH_CHECK(!split.train.empty(), "no training text among ", records.size(), " records");
  TORCH_CHECK(valid_fraction == 0.0 || !split.valid.empty(), "validation fraction ",
              valid_fraction, " of ", records.size(), " records selects none");
  return split;
}

TokenStream tokenize_records(const std::vector<TextRecord>& records, const Encoder& encode,
                             std::optional<int64_t> bos, std::optional<int64_t> eos) {
  std::vector<int64_t> ids;
  std::vector<uint8_t> learn;
  const auto append = [&](int64_t id, bool learned) {
    ids.push_back(id);
    learn.push_back(learned ? 1 : 0);
  };
  for (const auto& record : records) {
    if (bos) append(*bos, false);
    if (!record.prompt.empty())
      for (const int32_t id : encode(record.prompt)) append(id, false);
    for (const int32_t id : encode(record.text)) append(id, true);
    if (eos) append(*eos, true);
  }
  TokenStream stream{torch::tensor(ids, torch::kInt64),
                     torch::tensor(std::vector<int64_t>(learn.begin(), learn.end())).to(torch::kBool)};
  return stream;
}

int64_t packed_windows(const TokenStream& stream, int64_t block) {
  TORCH_CHECK(block >= 1, "packed sequences: block must be at least 1, got ", block);
  return std::max<int64_t>(0, (stream.ids.numel() - 1) / block);
}

namespace {

// Windows `which` (indices below packed_windows) as one batch.
PackedBatch gather_packed(const TokenStream& stream, int64_t block,
                          const std::vector<int64_t>& which) {
  const int64_t count = int64_t(which.size());
  const auto ids = stream.ids.contiguous();
  const auto learn = stream.learn.contiguous();
  PackedBatch batch{torch::empty({count, block}, torch::kInt64),
                    torch::empty({count, block}, torch::kInt64)};
  const int64_t* src = ids.data_ptr<int64_t>();
  const bool* keep = learn.data_ptr<bool>();
  int64_t* input = batch.input.data_ptr<int64_t>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  for (int64_t b = 0; b < count; ++b) {
    const int64_t start = which[size_t(b)] * block;
    for (int64_t t = 0; t < block; ++t) {
      input[b * block + t] = src[start + t];
      labels[b * block + t] = keep[start + t + 1] ? src[start + t + 1] : kIgnore;
    }
  }
  return batch;
}

}  // namespace

PackedBatch packed_range(const TokenStream& stream, int64_t block, int64_t first, int64_t count) {
  const int64_t windows = packed_windows(stream, block);
  TORCH_CHECK(first >= 0 && count >= 1 && first + count <= windows, "packed windows [", first, ", ",
              first + count, ") are outside the ", windows, " windows of ", block,
              " tokens the text holds");
  std::vector<int64_t> which(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) which[size_t(k)] = first + k;
  return gather_packed(stream, block, which);
}

PackedBatches::PackedBatches(TokenStream stream, int64_t block, int64_t batch, uint64_t seed)
    : stream_(std::move(stream)),
      block_(block),
      batch_(batch),
      windows_(packed_windows(stream_, block)),
      seed_(seed) {
  TORCH_CHECK(windows_ >= 1, "packed sequences: ", stream_.ids.numel(),
              " tokens are too few for one window of ", block, " + 1");
  TORCH_CHECK(batch_ >= 1, "PackedBatches: batch size must be positive, got ", batch_);
}

const torch::Tensor& PackedBatches::order(int64_t epoch) {
  if (epoch != epoch_) {
    order_ = epoch_permutation(windows_, seed_, epoch);
    epoch_ = epoch;
  }
  return order_;
}

PackedBatch PackedBatches::batch(int64_t index) {
  TORCH_CHECK(index >= 0, "PackedBatches: batch index must be non-negative, got ", index);
  std::vector<int64_t> which;
  for (int64_t position = index * batch_; position < (index + 1) * batch_; ++position)
    which.push_back(order(position / windows_).data_ptr<int64_t>()[position % windows_]);
  return gather_packed(stream_, block_, which);
}

}  // namespace lowbit::data

#include "text/hf/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <queue>
#include <utility>

#include "text/error.h"
#include "text/unicode/utf8.h"

namespace lowbit::text::hf {
namespace {

// The Rust library caches 10,000 pieces of under 256 bytes; a larger cache
// holds every distinct word of a book-sized text (the KJV has ~30,000 pieces).
constexpr size_t kCacheCapacity = 1 << 16;
constexpr size_t kCacheMaxPiece = 256;

std::string byte_token(unsigned byte) {
  char name[8];
  std::snprintf(name, sizeof name, "<0x%02X>", byte);
  return name;
}

}  // namespace

BpeModel::BpeModel(const JsonField& model) : file_(model.file()) {
  if (const std::optional<JsonField> type = model.find("type"); type && type->as_string() != "BPE")
    type->unsupported("\"BPE\"");
  if (const std::optional<JsonField> dropout = model.find("dropout")) {
    if (!dropout->json().is_number() || dropout->json().get<double>() != 0.0)
      dropout->unsupported("null or 0: BPE-dropout samples merges at random");
  }
  if (const std::optional<JsonField> unk = model.find("unk_token")) unk_token_ = unk->as_string();
  continuing_subword_prefix_ = model.string_or("continuing_subword_prefix", "");
  end_of_word_suffix_ = model.string_or("end_of_word_suffix", "");
  fuse_unk_ = model.bool_or("fuse_unk", false);
  byte_fallback_ = model.bool_or("byte_fallback", false);
  ignore_merges_ = model.bool_or("ignore_merges", false);
  read_vocab(model.at("vocab"));
  read_merges(model.at("merges"));
  for (unsigned b = 0; b < 256; ++b) {
    const auto it = vocab_.find(byte_token(b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

void BpeModel::read_vocab(const JsonField& vocab) {
  if (!vocab.json().is_object()) vocab.fail("must be an object mapping tokens to ids, not " + vocab.quoted());
  vocab_.reserve(vocab.json().size());
  std::vector<std::pair<int32_t, const std::string*>> by_id;
  by_id.reserve(vocab.json().size());
  for (const auto& [token, id] : vocab.json().items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      vocab.fail("gives \"" + token + "\" the id " + id.dump() + ", not an id in [0, 2^31)");
    const auto [it, inserted] = vocab_.emplace(token, id.get<int32_t>());
    by_id.emplace_back(it->second, &it->first);
  }
  std::sort(by_id.begin(), by_id.end());
  for (size_t i = 1; i < by_id.size(); ++i) {
    if (by_id[i].first == by_id[i - 1].first)
      vocab.fail("gives \"" + *by_id[i - 1].second + "\" and \"" + *by_id[i].second + "\" the same id " +
                 std::to_string(by_id[i].first));
  }
}

void BpeModel::read_merges(const JsonField& merges) {
  const size_t count = merges.size();
  merges_.reserve(count);
  int32_t rank = 0;
  const auto id_of = [&](const std::string& token, size_t i) {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) merges.at(i).fail("uses \"" + token + "\", which is not in model.vocab");
    return it->second;
  };
  for (size_t i = 0; i < count; ++i) {
    const nlohmann::json& entry = merges.json()[i];
    std::string left, right;
    if (entry.is_string()) {
      // The older form, one "left right" string (a merges.txt line).
      const std::string& line = entry.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        merges.at(i).fail("must be two tokens separated by one space, not " + merges.at(i).quoted());
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      merges.at(i).fail("must be \"left right\" or [\"left\", \"right\"], not " + merges.at(i).quoted());
    }
    // With a continuing-subword prefix the right token carries it and the
    // merged token does not repeat it: "a" + "##b" -> "ab".
    std::string merged = left;
    if (!continuing_subword_prefix_.empty()) {
      if (right.rfind(continuing_subword_prefix_, 0) != 0)
        merges.at(i).fail("joins \"" + right + "\", which lacks the continuing_subword_prefix");
      merged += right.substr(continuing_subword_prefix_.size());
    } else {
      merged += right;
    }
    // The parts are looked up before the merged token, so a missing part is
    // the one named (in one statement the order was the compiler's choice:
    // GCC and clang named different tokens).
    const auto left_id = id_of(left, i);
    const auto right_id = id_of(right, i);
    const auto merged_id = id_of(merged, i);
    // Repeated pairs: the later entry wins, as when the Rust library collects them into a map.
    merges_[pair_key(left_id, right_id)] = {rank++, merged_id};
  }
}

int32_t BpeModel::unk_id() const {
  const auto it = vocab_.find(*unk_token_);
  if (it == vocab_.end())
    throw_error(file_, ": model.unk_token is \"", *unk_token_,
                "\", which is not in model.vocab, and the text has a character the vocabulary lacks");
  return it->second;
}

void BpeModel::tokenize(const std::string& piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    // Llama 3: a piece that is a token is taken whole, whatever the merges say.
    const auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() < kCacheMaxPiece;
  if (cacheable) {
    const std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(piece);
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word = merge_word(piece);
  ids.insert(ids.end(), word.begin(), word.end());
  if (cacheable) {
    const std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(piece, std::move(word));
  }
}

std::vector<int32_t> BpeModel::merge_word(const std::string& piece) const {
  // Characters to ids (merge_word in model.rs). A character missing from the
  // vocabulary becomes its "<0xHH>" byte tokens (byte_fallback), else the
  // unknown token (runs of them fused into one with fuse_unk), else nothing,
  // as in the Rust library.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool merged_away;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  const auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, false});
  };
  std::optional<int32_t> pending_unk;
  std::string text;
  for (size_t pos = 0; pos < piece.size();) {
    const size_t begin = pos;
    pos += unicode::sequence_length(static_cast<unsigned char>(piece[pos]));
    text.clear();
    if (begin > 0) text += continuing_subword_prefix_;
    text.append(piece, begin, pos - begin);
    if (pos == piece.size()) text += end_of_word_suffix_;

    if (const auto it = vocab_.find(text); it != vocab_.end()) {
      if (pending_unk) add(*std::exchange(pending_unk, std::nullopt));
      add(it->second);
      continue;
    }
    if (byte_fallback_ && std::all_of(text.begin(), text.end(), [&](char c) {
          return byte_ids_[static_cast<unsigned char>(c)] >= 0;
        })) {
      if (pending_unk) add(*std::exchange(pending_unk, std::nullopt));
      for (const char c : text) add(byte_ids_[static_cast<unsigned char>(c)]);
      continue;
    }
    if (!unk_token_) continue;
    if (pending_unk && !fuse_unk_) add(*pending_unk);
    pending_unk = unk_id();
  }
  if (pending_unk) add(*pending_unk);
  if (!symbols.empty()) symbols.back().next = -1;

  // Merges, lowest rank first and leftmost among equal ranks (word.rs).
  struct Candidate {
    int32_t rank, pos, id;
    bool operator<(const Candidate& other) const {  // "lower priority than"
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto consider = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    // Skip entries made stale by an earlier merge of either symbol.
    if (left.merged_away || left.next < 0) continue;
    const auto it = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.id != top.id) continue;
    Symbol& right = symbols[left.next];
    right.merged_away = true;
    left.id = top.id;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const Symbol& s : symbols)
    if (!s.merged_away) ids.push_back(s.id);
  return ids;
}

}  // namespace lowbit::text::hf

// What lowbit_text asks of SentencePiece, behind an interface that the module
// liblowbit_sentencepiece implements. Debian's libsentencepiece carries its own
// protobuf 3.14 and exports it; linked into a program that also loads
// libtorch's libprotobuf 3.21, one copy interposes on the other and the
// program aborts at start-up. The module is therefore loaded on first use with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND), so that SentencePiece binds to its own
// copy and nothing else sees it (load_module.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lowbit::text::sentencepiece_module {

// One loaded .model (SentencePieceProcessor). Ids are SentencePiece's; -1 is "none".
class Model {
 public:
  virtual ~Model() = default;
  virtual int piece_size() const = 0;
  virtual int piece_to_id(std::string_view piece) const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual bool is_control(int id) const = 0;
  virtual bool is_unknown(int id) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
  // Each returns an empty string on success, else SentencePiece's message.
  virtual std::string encode(std::string_view text, std::vector<int>& ids) const = 0;
  virtual std::string decode(const std::vector<int>& ids, std::string& text) const = 0;
};

struct Api {
  // The model whose .model file holds `serialized` (read and checked by
  // lowbit first: model_check.h); null and `error` set when SentencePiece
  // cannot load it.
  std::unique_ptr<Model> (*load)(std::string_view serialized, std::string& error);
  // SentencePieceTrainer::Train with these flags after fixing the random seed;
  // an empty string on success, else SentencePiece's message.
  std::string (*train)(const std::unordered_map<std::string, std::string>& flags, unsigned seed);
};

}  // namespace lowbit::text::sentencepiece_module

// The module's one entry point, looked up with dlsym.
extern "C" const lowbit::text::sentencepiece_module::Api* lowbit_sentencepiece_api();

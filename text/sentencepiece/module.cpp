// liblowbit_sentencepiece: the Api of module_api.h over SentencePiece itself.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "text/sentencepiece/module_api.h"

namespace lowbit::text::sentencepiece_module {
namespace {

class ProcessorModel final : public Model {
 public:
  int piece_size() const override { return processor.GetPieceSize(); }
  int piece_to_id(std::string_view piece) const override { return processor.PieceToId(piece); }
  std::string id_to_piece(int id) const override { return processor.IdToPiece(id); }
  bool is_control(int id) const override { return processor.IsControl(id); }
  bool is_unknown(int id) const override { return processor.IsUnknown(id); }
  int bos_id() const override { return processor.bos_id(); }
  int eos_id() const override { return processor.eos_id(); }
  int pad_id() const override { return processor.pad_id(); }
  std::string encode(std::string_view text, std::vector<int>& ids) const override {
    return message(processor.Encode(text, &ids));
  }
  std::string decode(const std::vector<int>& ids, std::string& text) const override {
    return message(processor.Decode(ids, &text));
  }

  static std::string message(const sentencepiece::util::Status& status) {
    return status.ok() ? std::string() : status.ToString();
  }

  sentencepiece::SentencePieceProcessor processor;
};

std::unique_ptr<Model> load(std::string_view serialized, std::string& error) {
  auto model = std::make_unique<ProcessorModel>();
  error = ProcessorModel::message(model->processor.LoadFromSerializedProto(serialized));
  if (!error.empty()) return nullptr;
  return model;
}

std::string train(const std::unordered_map<std::string, std::string>& flags, unsigned seed) {
  sentencepiece::SetRandomGeneratorSeed(seed);
  return ProcessorModel::message(sentencepiece::SentencePieceTrainer::Train(flags));
}

const Api kApi = {load, train};

}  // namespace
}  // namespace lowbit::text::sentencepiece_module

extern "C" const lowbit::text::sentencepiece_module::Api* lowbit_sentencepiece_api() {
  return &lowbit::text::sentencepiece_module::kApi;
}

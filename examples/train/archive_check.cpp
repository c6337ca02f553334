#include "examples/train/archive_check.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

namespace lowbit::train {
namespace {

using caffe2::serialize::ReadAdapterInterface;

// A record name or a line of class source as a message shows it: control
// bytes and non-ASCII escaped, long ones cut, so a corrupt name stays readable.
std::string printable(std::string_view s) {
  constexpr size_t kMax = 120;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

// ---- The zip directory, read as libtorch's zip reader (miniz) reads it ----

uint64_t little_endian(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int k = 0; k < bytes; ++k) v |= uint64_t(p[k]) << (8 * k);
  return v;
}

// `n` bytes of `in` at `pos`; `what` names them when they are not all there.
std::vector<unsigned char> read_at(const ReadAdapterInterface& in, uint64_t pos, uint64_t n,
                                   const std::string& what) {
  const uint64_t size = in.size();
  TORCH_CHECK(pos <= size && n <= size - pos, what, " (", n, " bytes at ", pos,
              ") lies past the end of the archive (", size, " bytes)");
  std::vector<unsigned char> bytes(n);
  TORCH_CHECK(n == 0 || in.read(pos, bytes.data(), n) == n, what, " cannot be read");
  return bytes;
}

constexpr uint64_t kEndSignature = 0x06054b50, kZip64LocatorSignature = 0x07064b50,
                   kZip64EndSignature = 0x06064b50, kEntrySignature = 0x02014b50,
                   kLocalSignature = 0x04034b50;
constexpr uint64_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56, kEntrySize = 46,
                   kLocalHeaderSize = 30;
constexpr uint64_t kZip64Marker = 0xffffffff;  // a 32-bit field whose value is in the zip64 extra
// Deflate codes a 258-byte match in 2 bits at best, so a deflated record
// expands at most 1032 times.
constexpr uint64_t kDeflateMaxRatio = 1032;

struct ZipRecord {
  std::string name;
  uint64_t method, compressed, uncompressed, local_offset;
};

struct Directory {
  uint64_t offset, size, entries;
};

// The central directory, found as miniz finds it: the last end-of-directory
// signature with a whole record after it, in the last 64 KiB (the longest
// zip comment) and the record; then, when a zip64 locator sits right before
// it and points at a zip64 end record, that record's fields instead.
Directory find_directory(const ReadAdapterInterface& in) {
  const uint64_t size = in.size();
  TORCH_CHECK(size >= kEndSize, "it is not a zip archive (", size, " bytes)");
  const uint64_t from = size > 0xffff + kEndSize ? size - 0xffff - kEndSize : 0;
  const auto tail = read_at(in, from, size - from, "its end");
  uint64_t end = size;
  for (uint64_t i = tail.size() - kEndSize + 1; i-- > 0;) {
    if (little_endian(&tail[i], 4) == kEndSignature) {
      end = from + i;
      break;
    }
  }
  TORCH_CHECK(end < size, "it is not a zip archive (no end-of-directory record in its last ",
              tail.size(), " bytes)");
  const unsigned char* e = &tail[end - from];
  Directory d{little_endian(e + 16, 4), little_endian(e + 12, 4), little_endian(e + 10, 2)};
  if (end >= kZip64LocatorSize + kZip64EndSize) {
    const auto locator = read_at(in, end - kZip64LocatorSize, kZip64LocatorSize, "its zip64 locator");
    if (little_endian(locator.data(), 4) == kZip64LocatorSignature) {
      const auto z = read_at(in, little_endian(&locator[8], 8), kZip64EndSize, "its zip64 end record");
      if (little_endian(z.data(), 4) == kZip64EndSignature) {
        d = {little_endian(&z[48], 8), little_endian(&z[40], 8), little_endian(&z[32], 8)};
      }
    }
  }
  TORCH_CHECK(d.size <= size && d.offset <= size - d.size, "its central directory (", d.size,
              " bytes at ", d.offset, ") lies past the end of the archive (", size, " bytes)");
  TORCH_CHECK(d.entries <= d.size / kEntrySize, "its central directory of ", d.size,
              " bytes cannot hold the ", d.entries, " records it claims");
  return d;
}

// The sizes and offset a zip64 extra field holds for the fields of `record`
// that are 0xffffffff, in the order miniz reads them (its first such field).
void read_zip64_extra(const unsigned char* extra, uint64_t size, ZipRecord& record) {
  while (size > 0) {
    const uint64_t id = size >= 4 ? little_endian(extra, 2) : 0;
    const uint64_t n = size >= 4 ? little_endian(extra + 2, 2) : size;
    TORCH_CHECK(size >= 4 && n <= size - 4, "record '", printable(record.name),
                "' has corrupt extra fields in the central directory");
    if (id == 1) {
      const unsigned char* field = extra + 4;
      uint64_t left = n;
      for (uint64_t* value : {&record.uncompressed, &record.compressed, &record.local_offset}) {
        if (*value != kZip64Marker) continue;
        TORCH_CHECK(left >= 8, "record '", printable(record.name),
                    "' lacks a size in its zip64 extra field");
        *value = little_endian(field, 8);
        field += 8;
        left -= 8;
      }
      return;
    }
    extra += 4 + n;
    size -= 4 + n;
  }
}

std::vector<ZipRecord> zip_records(const ReadAdapterInterface& in) {
  const Directory d = find_directory(in);
  const auto dir = read_at(in, d.offset, d.size, "its central directory");
  std::vector<ZipRecord> records;
  uint64_t p = 0;
  for (uint64_t r = 0; r < d.entries; ++r) {
    const unsigned char* h = dir.data() + p;
    TORCH_CHECK(dir.size() - p >= kEntrySize && little_endian(h, 4) == kEntrySignature,
                "its central directory is corrupt at record ", r);
    const uint64_t name_size = little_endian(h + 28, 2), extra_size = little_endian(h + 30, 2),
                   comment_size = little_endian(h + 32, 2);
    const uint64_t entry_size = kEntrySize + name_size + extra_size + comment_size;
    TORCH_CHECK(entry_size <= dir.size() - p, "its central directory is corrupt at record ", r);
    ZipRecord record{std::string(reinterpret_cast<const char*>(h + kEntrySize), name_size),
                     little_endian(h + 10, 2), little_endian(h + 20, 4), little_endian(h + 24, 4),
                     little_endian(h + 42, 4)};
    if (record.compressed == kZip64Marker || record.uncompressed == kZip64Marker ||
        record.local_offset == kZip64Marker) {
      read_zip64_extra(h + kEntrySize + name_size, extra_size, record);
    }
    records.push_back(std::move(record));
    p += entry_size;
  }
  return records;
}

// libtorch's reader allocates a record's uncompressed size (from the
// central directory) before reading it: each record must lie inside the
// archive and claim no more than its bytes can hold.
void check_record_sizes(const ReadAdapterInterface& in, const ZipRecord& r) {
  const std::string name = printable(r.name);
  TORCH_CHECK(r.method == 0 || r.method == 8, "record '", name, "' is compressed with method ",
              r.method, "; expected stored (0) or deflate (8)");
  const auto local = read_at(in, r.local_offset, kLocalHeaderSize, "record '" + name + "'");
  TORCH_CHECK(little_endian(local.data(), 4) == kLocalSignature, "record '", name,
              "' has no local header at offset ", r.local_offset);
  const uint64_t data = r.local_offset + kLocalHeaderSize + little_endian(&local[26], 2) +
                        little_endian(&local[28], 2);
  const uint64_t size = in.size();
  TORCH_CHECK(data <= size && r.compressed <= size - data, "record '", name, "' (", r.compressed,
              " bytes at ", data, ") lies past the end of the archive (", size, " bytes)");
  if (r.method == 0) {
    TORCH_CHECK(r.uncompressed == r.compressed, "record '", name, "' is stored in ", r.compressed,
                " bytes but claims ", r.uncompressed, "; expected as many");
  } else {
    TORCH_CHECK(r.uncompressed / kDeflateMaxRatio <= r.compressed &&
                    (r.uncompressed == 0 || r.compressed > 0),
                "record '", name, "' claims ", r.uncompressed, " bytes from ", r.compressed,
                " deflated ones; deflate expands at most ", kDeflateMaxRatio, " times");
  }
}

// ---- Record names ----

bool all_of_class(std::string_view s, bool (*member)(char)) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!member(c)) return false;
  }
  return true;
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}
bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

enum class RecordKind { kData, kPickle, kClassSource };

// What record `rest` (its name below the archive's folder) holds, or a
// refusal: only names OutputArchive writes, so that nothing else of
// libtorch's import (its legacy model.json path, say) is reached. libtorch
// 2.x adds .data/version, byteorder and .data/serialization_id.
RecordKind record_kind(std::string_view rest, const std::string& name) {
  for (const char* fixed : {"version", ".data/version", "byteorder", ".data/serialization_id"}) {
    if (rest == fixed) return RecordKind::kData;
  }
  if (rest == "data.pkl" || rest == "constants.pkl") return RecordKind::kPickle;
  for (const std::string_view folder : {"data/", "constants/"}) {
    if (starts_with(rest, folder) && all_of_class(rest.substr(folder.size()), is_digit)) {
      return RecordKind::kData;
    }
  }
  if (starts_with(rest, "code/")) {
    // A class's qualifier as a path (__torch__/___torch_mangle_3.py), and the
    // pickled source ranges beside it.
    std::string_view path = rest.substr(5);
    const bool debug = ends_with(path, ".py.debug_pkl");
    path.remove_suffix(debug ? 10 : 0);
    if (ends_with(path, ".py")) {
      path.remove_suffix(3);
      bool words = !path.empty();
      for (size_t at = 0; words && at <= path.size();) {
        const size_t slash = std::min(path.find('/', at), path.size());
        words = all_of_class(path.substr(at, slash - at), is_word);
        at = slash + 1;
      }
      if (words) return debug ? RecordKind::kPickle : RecordKind::kClassSource;
    }
  }
  TORCH_CHECK(false, "record '", name, "' is not one that torch's OutputArchive writes ",
              "(expected data.pkl, data/<n>, constants.pkl, code/<class path>.py and its ",
              ".debug_pkl, version)");
}

// ---- Pickles ----

// A tensor storage a pickle names (its persistent id): the record key, and
// the bytes libtorch's Unpickler gives the storage (element count times the
// element size of its type, whatever the record holds).
struct StorageRef {
  std::string key;
  uint64_t numel, element_size;
};

// The element size of torch.<type>Storage; 1 for a type not listed (a lower
// bound for every dtype).
uint64_t storage_element_size(std::string_view type) {
  static const std::pair<std::string_view, uint64_t> kSizes[] = {
      {"FloatStorage", 4},   {"DoubleStorage", 8},       {"HalfStorage", 2},
      {"BFloat16Storage", 2}, {"LongStorage", 8},        {"IntStorage", 4},
      {"ShortStorage", 2},   {"ComplexFloatStorage", 8}, {"ComplexDoubleStorage", 16}};
  for (const auto& [name, bytes] : kSizes) {
    if (type == name) return bytes;
  }
  return 1;
}

// Walks the opcodes of a pickle as libtorch's Unpickler reads them and
// refuses a length or memo index that promises more than the pickle holds:
// the Unpickler sizes a string by its 4- or 8-byte length before reading it,
// and grows its memo table to a 4-byte index, so a few changed bytes made it
// allocate gigabytes (checkpoint_fuzz's second finding). It also keeps the
// stack and memo far enough to read each storage's persistent id
// (('storage', torch.<T>Storage, key, device, numel), often through memo
// gets) into `storages`: the Unpickler sizes a storage by that numel, not by
// its record (checkpoint_fuzz's seventh finding). Stops at an opcode the
// Unpickler does not read, or a stack it would find empty (it throws there).
void check_pickle_lengths(const unsigned char* p, size_t n, const std::string& name,
                          std::vector<StorageRef>& storages) {
  // What the walk needs of a stack entry; text views into the pickle (a
  // memo get copies no string).
  struct Item {
    enum Kind { kOther, kMark, kString, kGlobal, kInt, kStorage } kind = kOther;
    std::string_view text;
    uint64_t number = 0;
  };
  std::vector<Item> stack, memo;
  size_t i = 0;
  const auto take = [&](size_t bytes) {
    TORCH_CHECK(bytes <= n - i, "record '", name,
                "': the pickle ends inside a value (a length field changed?)");
    const size_t at = i;
    i += bytes;
    return at;
  };
  const auto little = [&](size_t bytes) { return little_endian(p + take(bytes), int(bytes)); };
  const auto text = [&](size_t length) {
    const size_t at = take(length);
    return std::string_view(reinterpret_cast<const char*>(p + at), length);
  };
  const auto pop = [&](size_t count) {
    if (stack.size() < count) return false;
    stack.resize(stack.size() - count);
    return true;
  };
  // Pops down to the topmost mark; the items above it, or false.
  const auto pop_mark = [&](std::vector<Item>* items) {
    size_t m = stack.size();
    while (m > 0 && stack[m - 1].kind != Item::kMark) --m;
    if (m == 0) return false;
    if (items) items->assign(stack.begin() + std::ptrdiff_t(m), stack.end());
    stack.resize(m - 1);
    return true;
  };
  const auto push = [&](Item::Kind kind, std::string_view t = {}, uint64_t number = 0) {
    stack.push_back({kind, t, number});
  };
  while (i < n) {
    const unsigned char op = p[i++];
    bool ok = true;
    switch (op) {
      case 0x80: take(1); break;                                             // PROTO
      case 'K': push(Item::kInt, {}, little(1)); break;                      // BININT1
      case 'M': push(Item::kInt, {}, little(2)); break;                      // BININT2
      case 'J': {                                                            // BININT
        const uint64_t v = little(4);
        push(v < 0x80000000u ? Item::kInt : Item::kOther, {}, v);
      } break;
      case 0x8a: {                                                           // LONG1
        const size_t length = size_t(little(1));
        const uint64_t v = length <= 8 ? little_endian(p + take(length), int(length)) : (take(length), 0);
        const bool positive = length <= 8 && (length == 0 || (p[i - 1] & 0x80) == 0);
        push(positive ? Item::kInt : Item::kOther, {}, v);
      } break;
      case 'G': take(8); push(Item::kOther); break;                          // BINFLOAT
      case 'X': push(Item::kString, text(size_t(little(4)))); break;         // BINUNICODE
      case 0x8d: {                                                           // BINUNICODE8
        const uint64_t length = little(8);
        push(Item::kString, text(length > n ? n + 1 : size_t(length)));
      } break;
      case 'h': case 'j': {                                                  // BINGET LONG_BINGET
        const uint64_t id = little(op == 'h' ? 1 : 4);
        stack.push_back(id < memo.size() ? memo[id] : Item{});
      } break;
      case 'q': case 'r': {                                                  // BINPUT LONG_BINPUT
        // libtorch's pickler numbers memo entries 0, 1, 2, ...
        const uint64_t id = little(op == 'q' ? 1 : 4);
        TORCH_CHECK(id <= memo.size(), "record '", name, "': the pickle stores memo entry ", id,
                    " after ", memo.size(), " entries");
        const Item top = stack.empty() ? Item{} : stack.back();
        if (id == memo.size()) {
          memo.push_back(top);
        } else {
          memo[id] = top;
        }
      } break;
      case 'c': {                                                            // GLOBAL
        const size_t at = i;
        for (int line = 0; line < 2; ++line)
          while (p[take(1)] != '\n') {
          }
        push(Item::kGlobal, std::string_view(reinterpret_cast<const char*>(p + at), i - at));
      } break;
      case ']': case ')': case '}': case 'N': case 0x88: case 0x89:
        push(Item::kOther);                                                  // empty list ... bools
        break;
      case '(': push(Item::kMark); break;                                    // MARK
      case 't': {                                                            // TUPLE
        std::vector<Item> items;
        ok = pop_mark(&items);
        if (ok && items.size() == 5 && items[0].kind == Item::kString &&
            items[0].text == "storage" && items[1].kind == Item::kGlobal &&
            starts_with(items[1].text, "torch\n") && items[2].kind == Item::kString &&
            items[4].kind == Item::kInt) {
          std::string_view type = items[1].text.substr(6);
          type.remove_suffix(1);  // the name's newline
          storages.push_back({std::string(items[2].text), items[4].number,
                              storage_element_size(type)});
        }
        push(Item::kOther);
      } break;
      case 0x85: ok = pop(1); push(Item::kOther); break;                     // TUPLE1
      case 0x86: ok = pop(2); push(Item::kOther); break;                     // TUPLE2
      case 0x87: ok = pop(3); push(Item::kOther); break;                     // TUPLE3
      case 'l': case 'd': ok = pop_mark(nullptr); push(Item::kOther); break; // LIST DICT
      case 'e': case 'u': ok = pop_mark(nullptr); break;                     // APPENDS SETITEMS
      case 'a': case 'b': ok = pop(1); break;                                // APPEND BUILD
      case 's': ok = pop(2); break;                                          // SETITEM
      case 'R': case 0x81: ok = pop(2); push(Item::kOther); break;           // REDUCE NEWOBJ
      case 'Q': ok = pop(1); push(Item::kOther); break;                      // BINPERSID
      case '.': return;                                                      // STOP
      default: return;
    }
    if (!ok) return;
  }
}

// ---- Class source ----

// Reads one line of class source against the forms python_print gives the
// classes of OutputArchive's modules (attributes only, no methods, hooks or
// constants):
//   class Module(Module):
//     __parameters__ = ["weight", "bias", ]
//     __buffers__ = []
//     __annotations__ = []
//     __annotations__["param_groups/0"] = __torch__.___torch_mangle_4.Module
//     betas : Tuple[float, float]
// libtorch's source importer trusts this text: a changed annotation line
// crashed its parser (checkpoint_fuzz's sixth finding).
class SourceLine {
 public:
  explicit SourceLine(std::string_view line) : s_(line) {}

  bool is_class_header() {
    return literal("class ") && identifier() && literal("(Module):") && done();
  }
  bool is_name_list(std::string_view field) {
    if (!literal("  ") || !literal(field) || !literal(" = [")) return false;
    while (!literal("]")) {
      if (!quoted_name() || !literal(", ")) return false;
    }
    return done();
  }
  // An attribute's annotation: `__annotations__ = []`, `__annotations__["key"]
  // = Type` for a key that is no identifier, else `name : Type`. Dunder names
  // are the importer's own fields (__parameters__, __constants__, ...).
  bool is_annotation() {
    if (!literal("  ")) return false;
    const size_t start = i_;
    if (literal("__annotations__ = []")) return done();
    if (literal("__annotations__[")) return quoted_name() && literal("] = ") && type(0) && done();
    if (!identifier() || starts_with(s_.substr(start), "__")) return false;
    return literal(" : ") && type(0) && done();
  }

 private:
  bool done() const { return i_ == s_.size(); }
  bool literal(std::string_view text) {
    if (!starts_with(s_.substr(i_), text)) return false;
    i_ += text.size();
    return true;
  }
  // A Python identifier that the TorchScript lexer does not take as a keyword.
  bool identifier() {
    static const std::set<std::string_view> kKeywords{
        "False", "None",  "True",   "and",   "as",       "assert", "async",  "await",
        "break", "class", "continue", "def", "del",      "elif",   "else",   "except",
        "finally", "for", "from",   "global", "if",      "import", "in",     "is",
        "lambda", "nonlocal", "not", "or",   "pass",     "raise",  "return", "try",
        "while", "with",  "yield"};
    const size_t start = i_;
    if (i_ == s_.size() || is_digit(s_[i_])) return false;
    while (i_ < s_.size() && is_word(s_[i_])) ++i_;
    return i_ > start && !kKeywords.count(s_.substr(start, i_ - start));
  }
  // "name": printable, no quote or backslash (python_print writes names
  // between quotes unescaped).
  bool quoted_name() {
    if (!literal("\"")) return false;
    const size_t start = i_;
    while (i_ < s_.size() && s_[i_] != '"' && s_[i_] != '\\' &&
           static_cast<unsigned char>(s_[i_]) >= 0x20 && s_[i_] != 0x7f) {
      ++i_;
    }
    return i_ > start && literal("\"");
  }
  // Type := Name ('[' Element (', ' Element)* ']')?, Name := identifier
  // ('.' identifier)*, Element := Type | '()' (Tuple[()]). Nesting is
  // bounded: a checkpoint's types nest two deep.
  bool type(int depth) {
    constexpr int kMaxDepth = 16;
    if (depth > kMaxDepth || !identifier()) return false;
    while (literal(".")) {
      if (!identifier()) return false;
    }
    if (!literal("[")) return true;
    do {
      if (!literal("()") && !type(depth + 1)) return false;
    } while (literal(", "));
    return literal("]");
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Every line of `source` one of SourceLine's forms, in python_print's order:
// each class its header, __parameters__, __buffers__, then its annotations.
void check_class_source(std::string_view source, const std::string& name) {
  TORCH_CHECK(!source.empty() && source.back() == '\n', "record '", name,
              "' does not end its last line; expected class source as OutputArchive writes it");
  size_t line_number = 0, expected = 0;  // 0: a class header; 1, 2: the lists; 3: any
  for (size_t at = 0; at < source.size();) {
    const size_t end = source.find('\n', at);
    const std::string_view text = source.substr(at, end - at);
    at = end + 1;
    ++line_number;
    bool ok = false;
    if (expected == 0 || expected == 3) {
      ok = SourceLine(text).is_class_header();
      if (ok) {
        expected = 1;
        continue;
      }
    }
    if (expected == 1) ok = SourceLine(text).is_name_list("__parameters__");
    if (expected == 2) ok = SourceLine(text).is_name_list("__buffers__");
    if (expected == 3) ok = SourceLine(text).is_annotation();
    static const char* const kExpected[] = {
        "'class <name>(Module):'", "'  __parameters__ = [\"<name>\", ]'",
        "'  __buffers__ = [\"<name>\", ]'",
        ("a class header or an annotation ('  <name> : <Type>', "
         "'  __annotations__[\"<name>\"] = <Type>', '  __annotations__ = []')")};
    TORCH_CHECK(ok, "record '", name, "' line ", line_number, " ('", printable(text),
                "') is not class source as OutputArchive writes it; expected ", kExpected[expected]);
    expected = std::min<size_t>(expected + 1, 3);
  }
  TORCH_CHECK(expected == 3, "record '", name, "' ends inside a class header");
}

}  // namespace

void check_torch_archive(const std::shared_ptr<caffe2::serialize::ReadAdapterInterface>& archive) {
  const std::vector<ZipRecord> records = zip_records(*archive);
  TORCH_CHECK(!records.empty(), "it is an empty zip archive");
  // libtorch takes the first record's folder as the archive's and looks
  // names up ignoring case: every record in that folder, no two names alike.
  const std::string folder = records.front().name.substr(0, records.front().name.find('/') + 1);
  std::set<std::string> seen;
  std::map<std::string, uint64_t> record_sizes;  // by lower-case name
  std::vector<RecordKind> kinds;
  bool has_data = false;
  for (const ZipRecord& r : records) {
    const std::string name = printable(r.name);
    TORCH_CHECK(!folder.empty() && starts_with(r.name, folder), "record '", name,
                "' is not in the archive's folder '", printable(folder), "'");
    std::string lower = r.name;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    TORCH_CHECK(seen.insert(lower).second, "record '", name,
                "' is there twice (names are compared ignoring case)");
    record_sizes[lower] = r.uncompressed;
    const std::string_view rest = std::string_view(r.name).substr(folder.size());
    kinds.push_back(record_kind(rest, name));
    has_data = has_data || rest == "data.pkl";
    check_record_sizes(*archive, r);
  }
  TORCH_CHECK(has_data, "it is not a torch archive (no data.pkl)");
  caffe2::serialize::PyTorchStreamReader reader(archive);
  for (size_t k = 0; k < records.size(); ++k) {
    if (kinds[k] == RecordKind::kData) continue;
    const std::string rest = records[k].name.substr(folder.size());
    const auto [data, size] = reader.getRecord(rest);
    const auto* bytes = static_cast<const unsigned char*>(data.get());
    if (kinds[k] == RecordKind::kPickle) {
      std::vector<StorageRef> storages;
      check_pickle_lengths(bytes, size, printable(records[k].name), storages);
      // data.pkl's storages are data/<key>, constants.pkl's constants/<key>.
      const std::string dir = rest == "constants.pkl" ? "constants/" : "data/";
      for (const StorageRef& s : storages) {
        std::string lower = folder + dir + s.key;
        for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
        const auto record = record_sizes.find(lower);
        TORCH_CHECK(record != record_sizes.end(), "record '", printable(records[k].name),
                    "' names a storage in '", printable(dir + s.key), "', which the archive lacks");
        TORCH_CHECK(s.numel <= record->second / s.element_size, "record '",
                    printable(records[k].name), "' gives storage '", printable(dir + s.key), "' ",
                    s.numel, " elements of ", s.element_size, " bytes, but that record holds ",
                    record->second, " bytes");
      }
    } else {
      check_class_source({reinterpret_cast<const char*>(bytes), size}, printable(records[k].name));
    }
  }
}

}  // namespace lowbit::train

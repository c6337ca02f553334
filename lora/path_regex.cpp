#include "lora/path_regex.h"

#include <cstring>
#include <stdexcept>
#include <unordered_map>

namespace lowbit::lora {
namespace {

using ByteSet = PathRegex::ByteSet;
using Inst = PathRegex::Inst;
using Op = PathRegex::Op;

void add(ByteSet& s, unsigned char c) { s[c >> 6] |= uint64_t{1} << (c & 63); }
bool has(const ByteSet& s, unsigned char c) { return (s[c >> 6] >> (c & 63)) & 1; }
void add_range(ByteSet& s, unsigned char lo, unsigned char hi) {
  for (unsigned c = lo; c <= hi; ++c) add(s, static_cast<unsigned char>(c));
}
void add_all(ByteSet& s, const ByteSet& t) {
  for (size_t i = 0; i < s.size(); ++i) s[i] |= t[i];
}
ByteSet complement(ByteSet s) {
  for (uint64_t& w : s) w = ~w;
  return s;
}
bool is_word(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
// Each ASCII letter in `s` with its other case too.
void fold_case(ByteSet& s) {
  for (unsigned c = 'a'; c <= 'z'; ++c) {
    const auto lower = static_cast<unsigned char>(c), upper = static_cast<unsigned char>(c - 32);
    if (has(s, lower) || has(s, upper)) {
      add(s, lower);
      add(s, upper);
    }
  }
}

// The ASCII sets of \d \w \s (Python's re with the ASCII flag).
ByteSet class_set(char letter) {
  ByteSet s{};
  switch (letter) {
    case 'd': case 'D': add_range(s, '0', '9'); break;
    case 'w': case 'W':
      for (unsigned c = 0; c < 128; ++c)
        if (is_word(static_cast<unsigned char>(c))) add(s, static_cast<unsigned char>(c));
      break;
    default:  // s, S
      for (const char c : std::string_view(" \t\n\r\f\v")) add(s, static_cast<unsigned char>(c));
  }
  return letter >= 'A' && letter <= 'Z' ? complement(s) : s;
}

struct Node {
  enum class Kind { kEmpty, kSet, kConcat, kAlt, kRepeat, kAssert, kLook } kind = Kind::kEmpty;
  std::vector<Node> children;  // kConcat, kAlt; kRepeat and kLook: one
  uint32_t set = 0;            // kSet: index into the set table
  int min = 0, max = 0;        // kRepeat; max -1: no bound
  Op assertion = Op::kBegin;   // kAssert
  bool negate = false;         // kLook
};

struct Flags {
  bool ignore_case = false;
  bool dot_all = false;
};

// Recursive descent over the pattern, Python's sre_parse rules where a
// choice arises (a ']' first in a set is literal, a '{' that does not start a
// valid count is literal, "{,n}" means {0,n}).
class Parser {
 public:
  Parser(std::string_view pattern, std::vector<ByteSet>& sets) : p_(pattern), sets_(sets) {}

  Node parse() {
    Flags flags;
    if (p_.substr(0, 2) == "(?") {
      // Global flags, allowed only here: "(?i)" ...
      size_t i = 2;
      while (i < p_.size() && is_flag(p_[i])) ++i;
      if (i > 2 && i < p_.size() && p_[i] == ')') {
        apply_flags(p_.substr(2, i - 2), flags, true);
        pos_ = i + 1;
      }
    }
    Node n = alternation(flags, 0);
    if (pos_ < p_.size()) fail("unbalanced parenthesis", pos_);
    return n;
  }

 private:
  static constexpr int kMaxDepth = 200;
  static bool is_flag(char c) { return c != '\0' && std::strchr("aimsuxL", c) != nullptr; }

  [[noreturn]] void fail(const std::string& what, size_t at) const {
    throw std::invalid_argument(what + " at character " + std::to_string(at));
  }
  bool at_end() const { return pos_ >= p_.size(); }
  char peek(size_t ahead = 0) const { return pos_ + ahead < p_.size() ? p_[pos_ + ahead] : '\0'; }
  bool next_is(std::string_view s) const { return p_.substr(pos_, s.size()) == s; }

  Node set_node(ByteSet s, const Flags& flags) {
    if (flags.ignore_case) fold_case(s);
    Node n;
    n.kind = Node::Kind::kSet;
    n.set = static_cast<uint32_t>(sets_.size());
    sets_.push_back(s);
    return n;
  }
  Node byte_node(unsigned char c, const Flags& flags) {
    ByteSet s{};
    add(s, c);
    return set_node(s, flags);
  }

  void apply_flags(std::string_view letters, Flags& flags, bool on) {
    for (const char f : letters) {
      if (f == 'i') flags.ignore_case = on;
      else if (f == 's') flags.dot_all = on;
      else if (f == 'x' || f == 'L') fail(std::string("the flag '") + f + "' is not supported", pos_);
      // a, m, u: ASCII classes are what this engine has; ^ and $ differ under
      // m only around newlines, which module paths do not have.
    }
  }

  Node alternation(const Flags& flags, int depth) {
    if (depth > kMaxDepth) fail("groups nested deeper than " + std::to_string(kMaxDepth), pos_);
    Node alt;
    alt.kind = Node::Kind::kAlt;
    alt.children.push_back(concatenation(flags, depth));
    while (peek() == '|') {
      ++pos_;
      alt.children.push_back(concatenation(flags, depth));
    }
    return alt.children.size() == 1 ? std::move(alt.children.front()) : alt;
  }

  Node concatenation(const Flags& flags, int depth) {
    Node cat;
    cat.kind = Node::Kind::kConcat;
    while (!at_end() && peek() != '|' && peek() != ')') {
      // Python refuses to repeat a bare anchor, not a group holding one.
      const bool anchor = peek() == '^' || peek() == '$' ||
                          (peek() == '\\' && std::strchr("AZbB", peek(1)) != nullptr && peek(1) != '\0');
      Node atom_node = atom(flags, depth);
      if (quantifier_follows()) {
        if (anchor) fail("nothing to repeat", pos_);
        atom_node = quantified(std::move(atom_node));
        if (quantifier_follows()) fail("multiple repeat", pos_);
      }
      if (atom_node.kind != Node::Kind::kEmpty) cat.children.push_back(std::move(atom_node));
    }
    if (cat.children.size() == 1) return std::move(cat.children.front());
    if (cat.children.empty()) return Node{};
    return cat;
  }

  // A valid {n}, {n,}, {,m}, {n,m} or {,} at pos_ (else '{' is a literal).
  bool count_at(size_t at, int* min, int* max, size_t* end) const {
    if (at >= p_.size() || p_[at] != '{') return false;
    size_t i = at + 1;
    const auto digits = [&](std::string* out) {
      while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9') out->push_back(p_[i++]);
    };
    std::string lo, hi;
    digits(&lo);
    bool comma = false;
    if (i < p_.size() && p_[i] == ',') {
      comma = true;
      ++i;
      digits(&hi);
    }
    if (i >= p_.size() || p_[i] != '}' || (lo.empty() && !comma)) return false;
    if (!comma) hi = lo;
    const auto value = [&](const std::string& s) {
      if (s.size() > 4 || std::stoi(s) > PathRegex::kMaxRepeat)
        fail("a repetition count above " + std::to_string(PathRegex::kMaxRepeat), at);
      return std::stoi(s);
    };
    if (min) *min = lo.empty() ? 0 : value(lo);
    if (max) *max = hi.empty() ? -1 : value(hi);
    if (end) *end = i + 1;
    return true;
  }
  bool quantifier_follows() const {
    const char c = peek();
    return c == '*' || c == '+' || c == '?' || count_at(pos_, nullptr, nullptr, nullptr);
  }

  Node quantified(Node atom_node) {
    Node rep;
    rep.kind = Node::Kind::kRepeat;
    const char c = peek();
    if (c == '*') rep.min = 0, rep.max = -1, ++pos_;
    else if (c == '+') rep.min = 1, rep.max = -1, ++pos_;
    else if (c == '?') rep.min = 0, rep.max = 1, ++pos_;
    else {
      size_t end = 0;
      count_at(pos_, &rep.min, &rep.max, &end);
      if (rep.max >= 0 && rep.max < rep.min) fail("min repeat greater than max repeat", pos_);
      pos_ = end;
    }
    if (peek() == '?') ++pos_;  // lazy: the same set of matches
    rep.children.push_back(std::move(atom_node));
    return rep;
  }

  Node assertion(Op op) {
    Node n;
    n.kind = Node::Kind::kAssert;
    n.assertion = op;
    return n;
  }

  Node atom(const Flags& flags, int depth) {
    const size_t start = pos_;
    const char c = p_[pos_++];
    switch (c) {
      case '(': return group(flags, depth, start);
      case '[': return set(flags, start);
      case '.': {
        ByteSet s = complement(ByteSet{});
        if (!flags.dot_all) s[0] &= ~(uint64_t{1} << '\n');
        return set_node(s, flags);
      }
      case '^': return assertion(Op::kBegin);
      case '$': return assertion(Op::kEnd);
      case '*': case '+': case '?': fail("nothing to repeat", start);
      case '\\': return escape(flags, start);
      default: return byte_node(static_cast<unsigned char>(c), flags);
    }
  }

  Node group(const Flags& outer, int depth, size_t start) {
    Flags flags = outer;
    Node look;
    bool is_look = false;
    if (peek() == '?') {
      ++pos_;
      const char kind = peek();
      if (kind == ':') {
        ++pos_;
      } else if (kind == '=' || kind == '!') {
        ++pos_;
        is_look = true;
        look.kind = Node::Kind::kLook;
        look.negate = kind == '!';
      } else if (next_is("<=") || next_is("<!")) {
        fail("lookbehind assertions are not supported", start);
      } else if (next_is("P=")) {
        fail("backreferences are not supported", start);
      } else if (next_is("P<") || kind == '<') {
        const size_t name = pos_ + (kind == 'P' ? 2 : 1);
        const size_t close = p_.find('>', name);
        if (close == std::string_view::npos) fail("missing >, unterminated name", start);
        if (close == name) fail("missing group name", start);
        for (size_t i = name; i < close; ++i)
          if (!is_word(static_cast<unsigned char>(p_[i]))) fail("bad character in group name", i);
        pos_ = close + 1;
      } else if (kind == '#') {
        const size_t close = p_.find(')', pos_);
        if (close == std::string_view::npos) fail("missing ), unterminated comment", start);
        pos_ = close + 1;
        return Node{};
      } else {
        // Scoped flags: (?i:...), (?-i:...), (?s-i:...).
        size_t i = pos_;
        while (i < p_.size() && is_flag(p_[i])) ++i;
        const size_t on_end = i;
        size_t off_begin = i;
        if (i < p_.size() && p_[i] == '-') {
          off_begin = ++i;
          while (i < p_.size() && is_flag(p_[i])) ++i;
        }
        if (i == pos_ || i >= p_.size() || p_[i] != ':') {
          if (i > pos_ && i < p_.size() && p_[i] == ')')
            fail("global flags such as (?i) must be at the start of the pattern", start);
          fail("unknown extension (?" + std::string(1, kind) + " (only (?:, (?P<name>, (?<name>, "
               "(?=, (?!, (?# and flags are supported)", start);
        }
        apply_flags(p_.substr(pos_, on_end - pos_), flags, true);
        apply_flags(p_.substr(off_begin, i - off_begin), flags, false);
        pos_ = i + 1;
      }
    }
    Node inner = alternation(flags, depth + 1);
    if (peek() != ')') fail("missing ), unterminated subpattern", start);
    ++pos_;
    if (!is_look) return inner;
    look.children.push_back(std::move(inner));
    return look;
  }

  // One escaped byte (\n, \x41, \.) for sets and literals; -1 for \d \w \s
  // and their negations, whose set goes to `klass`.
  int escaped_byte(bool in_set, size_t start, ByteSet* klass) {
    if (at_end()) fail("a bad escape (end of pattern)", start);
    const char c = p_[pos_++];
    switch (c) {
      case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        *klass = class_set(c);
        return -1;
      case 'n': return '\n';
      case 't': return '\t';
      case 'r': return '\r';
      case 'f': return '\f';
      case 'v': return '\v';
      case 'a': return '\a';
      case 'b':
        if (in_set) return '\b';
        break;
      case '0': {
        int value = 0;
        for (int k = 0; k < 2 && peek() >= '0' && peek() <= '7'; ++k) value = value * 8 + (p_[pos_++] - '0');
        return value;
      }
      case 'x': case 'u': case 'U': {
        const size_t width = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        if (pos_ + width > p_.size()) fail(std::string("incomplete escape \\") + c, start);
        unsigned long value = 0;
        for (size_t k = 0; k < width; ++k) {
          const char h = p_[pos_++];
          if (!is_hex(h)) fail(std::string("incomplete escape \\") + c, start);
          value = value * 16 + static_cast<unsigned long>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
        }
        if (value >= 0x80)
          fail("an escape of a non-ASCII character (write the character itself, outside a set)", start);
        return static_cast<int>(value);
      }
      default: break;
    }
    if (c >= '1' && c <= '9') fail("backreferences are not supported", start);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      fail(std::string("a bad escape \\") + c, start);
    return static_cast<unsigned char>(c);
  }

  Node escape(const Flags& flags, size_t start) {
    switch (peek()) {
      case 'A': ++pos_; return assertion(Op::kBegin);
      case 'Z': ++pos_; return assertion(Op::kEnd);
      case 'b': ++pos_; return assertion(Op::kWordBoundary);
      case 'B': ++pos_; return assertion(Op::kNotWordBoundary);
      default: break;
    }
    ByteSet klass{};
    const int byte = escaped_byte(false, start, &klass);
    if (byte < 0) return set_node(klass, flags);
    return byte_node(static_cast<unsigned char>(byte), flags);
  }

  Node set(const Flags& flags, size_t start) {
    ByteSet s{};
    const bool negate = peek() == '^';
    if (negate) ++pos_;
    bool first = true;
    while (true) {
      if (at_end()) fail("unterminated character set", start);
      if (peek() == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      const size_t item = pos_;
      ByteSet klass{};
      int lo = static_cast<unsigned char>(p_[pos_++]);
      if (lo == '\\') lo = escaped_byte(true, item, &klass);
      if (lo >= 0x80) fail("a non-ASCII character in a set", item);
      if (peek() == '-' && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        ++pos_;
        const size_t hi_at = pos_;
        ByteSet hi_class{};
        int hi = static_cast<unsigned char>(p_[pos_++]);
        if (hi == '\\') hi = escaped_byte(true, hi_at, &hi_class);
        if (lo < 0 || hi < 0) fail("a bad character range", item);
        if (hi >= 0x80) fail("a non-ASCII character in a set", hi_at);
        if (hi < lo) fail("a bad character range", item);
        add_range(s, static_cast<unsigned char>(lo), static_cast<unsigned char>(hi));
      } else if (lo < 0) {
        add_all(s, klass);
      } else {
        add(s, static_cast<unsigned char>(lo));
      }
    }
    if (flags.ignore_case) fold_case(s);
    Flags plain = flags;
    plain.ignore_case = false;  // already folded before the complement
    return set_node(negate ? complement(s) : s, plain);
  }

  std::string_view p_;
  std::vector<ByteSet>& sets_;
  size_t pos_ = 0;
};

class Compiler {
 public:
  explicit Compiler(std::vector<Inst>& program) : program_(program) {}

  void compile(const Node& root) {
    emit(root);
    push({Op::kMatch});
  }

 private:
  uint32_t here() const { return static_cast<uint32_t>(program_.size()); }
  uint32_t push(Inst inst) {
    if (program_.size() >= PathRegex::kMaxProgram)
      throw std::invalid_argument("the pattern expands to more than " +
                                  std::to_string(PathRegex::kMaxProgram) +
                                  " states (counted repetitions multiply)");
    program_.push_back(inst);
    return here() - 1;
  }

  void emit(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kEmpty: return;
      case Node::Kind::kSet: push({Op::kByte, false, n.set}); return;
      case Node::Kind::kConcat:
        for (const Node& c : n.children) emit(c);
        return;
      case Node::Kind::kAssert: push({n.assertion}); return;
      case Node::Kind::kAlt: {
        std::vector<uint32_t> to_end;
        for (size_t i = 0; i + 1 < n.children.size(); ++i) {
          const uint32_t split = push({Op::kSplit});
          program_[split].x = here();
          emit(n.children[i]);
          to_end.push_back(push({Op::kJump}));
          program_[split].y = here();
        }
        emit(n.children.back());
        for (const uint32_t j : to_end) program_[j].x = here();
        return;
      }
      case Node::Kind::kRepeat: {
        const Node& body = n.children.front();
        for (int i = 0; i < n.min; ++i) emit(body);
        if (n.max < 0) {
          const uint32_t split = push({Op::kSplit});
          program_[split].x = here();
          emit(body);
          push({Op::kJump, false, split});
          program_[split].y = here();
          return;
        }
        std::vector<uint32_t> skips;
        for (int i = n.min; i < n.max; ++i) {
          const uint32_t split = push({Op::kSplit});
          program_[split].x = here();
          skips.push_back(split);
          emit(body);
        }
        for (const uint32_t s : skips) program_[s].y = here();
        return;
      }
      case Node::Kind::kLook: {
        const uint32_t look = push({Op::kLook, n.negate});
        program_[look].x = here();
        emit(n.children.front());
        push({Op::kMatch});
        program_[look].y = here();
        return;
      }
    }
  }

  std::vector<Inst>& program_;
};

}  // namespace

PathRegex::PathRegex(std::string_view pattern) {
  // Each literal costs a 32-byte set while parsing, before the program's
  // size is known: a bound on the text keeps that bounded too.
  if (pattern.size() > kMaxPattern)
    throw std::invalid_argument("a pattern of " + std::to_string(pattern.size()) +
                                " characters (at most " + std::to_string(kMaxPattern) + ")");
  Node root = Parser(pattern, sets_).parse();
  Compiler(program_).compile(root);
}

// One match's scratch: the text; the outcome of each lookahead at each
// position once it has been run (so nested lookaheads stay polynomial); and
// one mark per instruction, which every run of the match shares. A run
// visits only its own program's instructions (a lookahead's sub-program is
// jumped over by the program around it), and each run stamps its marks from
// a range of its own, so a lookahead costs what its states cost, not a pass
// over the whole program.
struct PathRegex::Run {
  std::string_view text;
  std::unordered_map<uint64_t, bool> looks;
  std::vector<uint64_t> marked;
  uint64_t next_stamp = 1;
};

// Follows every thread of the program from `entry` at `begin` together. With
// `anywhere`, a new thread starts at every position (search); with
// `to_end`, a thread counts only when it matches at the end of the text.
bool PathRegex::run(Run& r, uint32_t entry, size_t begin, bool anywhere, bool to_end) const {
  const std::string_view text = r.text;
  const size_t n = text.size();
  // A state is added at most once per position: its mark is this run's stamp for it.
  const uint64_t stamp = r.next_stamp;
  r.next_stamp += n + 1;
  std::vector<uint64_t>& marked = r.marked;
  std::vector<uint32_t> current, next, stack;
  bool matched = false;
  const auto word_at = [&](size_t i) { return i < n && is_word(static_cast<unsigned char>(text[i])); };

  // Adds the states reachable from `start` without reading a byte at `pos`.
  const auto close = [&](uint32_t start, size_t pos, std::vector<uint32_t>& list) {
    stack.push_back(start);
    while (!stack.empty()) {
      const uint32_t pc = stack.back();
      stack.pop_back();
      if (marked[pc] == stamp + pos) continue;
      marked[pc] = stamp + pos;
      const Inst& inst = program_[pc];
      switch (inst.op) {
        case Op::kByte: list.push_back(pc); break;
        case Op::kJump: stack.push_back(inst.x); break;
        case Op::kSplit:
          stack.push_back(inst.y);
          stack.push_back(inst.x);
          break;
        case Op::kBegin:
          if (pos == 0) stack.push_back(pc + 1);
          break;
        case Op::kEnd:
          if (pos == n) stack.push_back(pc + 1);
          break;
        case Op::kWordBoundary:
        case Op::kNotWordBoundary: {
          const bool boundary = (pos > 0 && word_at(pos - 1)) != word_at(pos);
          if (boundary == (inst.op == Op::kWordBoundary)) stack.push_back(pc + 1);
          break;
        }
        case Op::kLook: {
          const uint64_t key = (uint64_t{pc} << 32) | pos;
          auto it = r.looks.find(key);
          if (it == r.looks.end()) it = r.looks.emplace(key, run(r, inst.x, pos, false, false)).first;
          if (it->second != inst.negate) stack.push_back(inst.y);
          break;
        }
        case Op::kMatch:
          if (!to_end || pos == n) matched = true;
          break;
      }
    }
  };

  close(entry, begin, current);
  for (size_t pos = begin; !matched && pos < n; ++pos) {
    if (current.empty() && !anywhere) return false;
    next.clear();
    const auto byte = static_cast<unsigned char>(text[pos]);
    for (const uint32_t pc : current)
      if (has(sets_[program_[pc].x], byte)) close(pc + 1, pos + 1, next);
    if (anywhere) close(entry, pos + 1, next);
    current.swap(next);
  }
  return matched;
}

bool PathRegex::full_match(std::string_view text) const {
  Run r{text, {}, std::vector<uint64_t>(program_.size(), 0)};
  return run(r, 0, 0, false, true);
}

bool PathRegex::search(std::string_view text) const {
  Run r{text, {}, std::vector<uint64_t>(program_.size(), 0)};
  return run(r, 0, 0, true, false);
}

}  // namespace lowbit::lora

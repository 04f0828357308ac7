// json_dom.cpp - simdjson's DOM parser behind the C API of json_dom.h.
//
// One parser per thread, kept between documents (its buffers grow to the
// largest document seen), and one padded copy of the input: simdjson reads
// up to SIMDJSON_PADDING bytes past a document's end. Errors come back as
// codes, never as exceptions.
#include "json_dom.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>

#include <simdjson.h>

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

// A value crosses the C API as its two words: simdjson's elements and
// iterators are a (document, tape index) pair.
static_assert(sizeof(element) == sizeof(json_value), "element is two words");
static_assert(sizeof(array::iterator) == sizeof(json_value), "iterator is two words");
static_assert(sizeof(object::iterator) == sizeof(json_value), "iterator is two words");
static_assert(std::is_trivially_copyable<element>::value, "element copies as bytes");

template <typename T> static T from(const json_value &v)
{
    T t;
    std::memcpy(static_cast<void *>(&t), &v, sizeof t);
    return t;
}

template <typename T> static json_value to(const T &t)
{
    json_value v;
    std::memcpy(&v, static_cast<const void *>(&t), sizeof v);
    return v;
}

namespace {
// Nesting deeper than this is refused: OIP documents need a handful of
// levels, and data nests once per dimension (at most 8).
constexpr size_t max_depth = 64;
// Documents up to this size keep the thread's buffers between parses.
constexpr size_t large = 1 << 20;

struct thread_state {
    simdjson::dom::parser parser;
    char *padded = nullptr;
    size_t padded_cap = 0;
    ~thread_state() { std::free(padded); }
};
thread_local thread_state state;
} // namespace

extern "C" bool json_parse(const char *text, size_t len, json_value *root, char *err,
                           size_t errlen)
{
    try {
        thread_state &s = state;
        if (s.padded_cap < len + simdjson::SIMDJSON_PADDING ||
            (s.padded_cap > 2 * large && len <= large)) {
            size_t cap = len + simdjson::SIMDJSON_PADDING + 4096;
            char *p = static_cast<char *>(std::realloc(s.padded, cap));
            if (!p) {
                std::snprintf(err, errlen, "out of memory");
                return false;
            }
            s.padded = p;
            s.padded_cap = cap;
        }
        std::memcpy(s.padded, text, len);
        std::memset(s.padded + len, 0, simdjson::SIMDJSON_PADDING);
        // A large document's buffers (about 15 x its size) are not kept for
        // the small ones that follow.
        bool oversized = s.parser.capacity() > large && len <= large;
        if (s.parser.capacity() < len || s.parser.max_depth() != max_depth || oversized) {
            size_t capacity = len > 4096 ? len : 4096;
            if (s.parser.allocate(capacity, max_depth) != simdjson::SUCCESS) {
                std::snprintf(err, errlen, "out of memory");
                return false;
            }
        }
        element doc;
        auto error = s.parser.parse(s.padded, len, false).get(doc);
        if (error) {
            std::snprintf(err, errlen, "malformed JSON: %s", simdjson::error_message(error));
            return false;
        }
        *root = to(doc);
        return true;
    } catch (...) {
        std::snprintf(err, errlen, "out of memory");
        return false;
    }
}

extern "C" enum json_kind json_kind_of(json_value v)
{
    switch (from<element>(v).type()) {
    case element_type::ARRAY: return JSON_ARRAY;
    case element_type::OBJECT: return JSON_OBJECT;
    case element_type::INT64: return JSON_INT64;
    case element_type::UINT64: return JSON_UINT64;
    case element_type::DOUBLE: return JSON_DOUBLE;
    case element_type::STRING: return JSON_STRING;
    case element_type::BOOL: return JSON_BOOL;
    default: return JSON_NULL;
    }
}

extern "C" bool json_member(json_value v, const char *key, json_value *out)
{
    object o;
    element e;
    if (from<element>(v).get_object().get(o) || o.at_key(key).get(e)) return false;
    *out = to(e);
    return true;
}

extern "C" size_t json_size(json_value v)
{
    element e = from<element>(v);
    array a;
    object o;
    if (!e.get_array().get(a)) return a.size();
    if (!e.get_object().get(o)) return o.size();
    return 0;
}

extern "C" bool json_first(json_value v, json_iter *it, json_value *out)
{
    array a;
    if (from<element>(v).get_array().get(a) || a.begin() == a.end()) return false;
    it->at = to(a.begin());
    it->end = to(a.end());
    *out = to(*a.begin());
    return true;
}

extern "C" bool json_next(json_iter *it, json_value *out)
{
    array::iterator at = from<array::iterator>(it->at);
    ++at;
    if (at == from<array::iterator>(it->end)) return false;
    it->at = to(at);
    *out = to(*at);
    return true;
}

static void member(const object::iterator &at, const char **key, size_t *klen, json_value *out)
{
    std::string_view k = at.key();
    *key = k.data();
    *klen = k.size();
    *out = to(at.value());
}

extern "C" bool json_first_member(json_value v, json_iter *it, const char **key, size_t *klen,
                                  json_value *out)
{
    object o;
    if (from<element>(v).get_object().get(o) || o.begin() == o.end()) return false;
    it->at = to(o.begin());
    it->end = to(o.end());
    member(o.begin(), key, klen, out);
    return true;
}

extern "C" bool json_next_member(json_iter *it, const char **key, size_t *klen, json_value *out)
{
    object::iterator at = from<object::iterator>(it->at);
    ++at;
    if (at == from<object::iterator>(it->end)) return false;
    it->at = to(at);
    member(at, key, klen, out);
    return true;
}

extern "C" bool json_bool(json_value v)
{
    bool b = false;
    return from<element>(v).get_bool().get(b) ? false : b;
}

extern "C" int64_t json_int64(json_value v)
{
    int64_t i = 0;
    return from<element>(v).get_int64().get(i) ? 0 : i;
}

extern "C" uint64_t json_uint64(json_value v)
{
    uint64_t u = 0;
    return from<element>(v).get_uint64().get(u) ? 0 : u;
}

extern "C" double json_number(json_value v)
{
    double d = 0;
    return from<element>(v).get_double().get(d) ? 0 : d;
}

extern "C" const char *json_string(json_value v, size_t *len)
{
    std::string_view s;
    if (from<element>(v).get_string().get(s)) {
        *len = 0;
        return nullptr;
    }
    *len = s.size();
    return s.data();
}

extern "C" bool json_valid_utf8(const char *text, size_t len)
{
    return simdjson::validate_utf8(text, len);
}

extern "C" char *json_text(json_value v)
{
    try {
        std::string text = simdjson::minify(from<element>(v));
        char *out = static_cast<char *>(std::malloc(text.size() + 1));
        if (out) std::memcpy(out, text.c_str(), text.size() + 1);
        return out;
    } catch (...) {
        return nullptr;
    }
}

/* mp_bounds.c - see mp_bounds.h. A walk over the encoding's headers, with
 * no allocation: `pending` counts the objects still to come. */
#include "mp_bounds.h"

#include <stdint.h>

static uint64_t be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | p[i];
    return v;
}

bool mp_bounded(const char *data, size_t len, size_t *used)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t off = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (off >= len) return false;
        unsigned char t = p[off];
        size_t head = 1;      /* header bytes */
        int size_bytes = 0;   /* bytes of a length or count after the type */
        uint64_t payload = 0; /* bytes of data after the header */
        uint64_t children = 0;
        if (t <= 0x7f || t >= 0xe0 || (t >= 0xc0 && t <= 0xc3 && t != 0xc1)) {
            /* fixint, nil, false, true */
        } else if (t >= 0x80 && t <= 0x8f) {
            children = 2u * (t & 0x0f);
        } else if (t >= 0x90 && t <= 0x9f) {
            children = t & 0x0f;
        } else if (t >= 0xa0 && t <= 0xbf) {
            payload = t & 0x1f;
        } else {
            switch (t) {
            case 0xc4: case 0xd9: size_bytes = 1; break; /* bin8, str8 */
            case 0xc5: case 0xda: size_bytes = 2; break;
            case 0xc6: case 0xdb: size_bytes = 4; break;
            case 0xc7: size_bytes = 1; head++; break;    /* ext: + type byte */
            case 0xc8: size_bytes = 2; head++; break;
            case 0xc9: size_bytes = 4; head++; break;
            case 0xca: payload = 4; break;
            case 0xcb: payload = 8; break;
            case 0xcc: case 0xd0: payload = 1; break;
            case 0xcd: case 0xd1: payload = 2; break;
            case 0xce: case 0xd2: payload = 4; break;
            case 0xcf: case 0xd3: payload = 8; break;
            case 0xd4: payload = 2; break; /* fixext: type byte + data */
            case 0xd5: payload = 3; break;
            case 0xd6: payload = 5; break;
            case 0xd7: payload = 9; break;
            case 0xd8: payload = 17; break;
            case 0xdc: case 0xde: size_bytes = 2; break; /* array16, map16 */
            case 0xdd: case 0xdf: size_bytes = 4; break; /* array32, map32 */
            default: return false; /* 0xc1 is never used */
            }
        }
        if (size_bytes) {
            if (len - off < 1 + (size_t)size_bytes) return false;
            uint64_t n = be(p + off + 1, size_bytes);
            head += (size_t)size_bytes;
            if (t == 0xdc || t == 0xdd) children = n;
            else if (t == 0xde || t == 0xdf) children = 2 * n;
            else payload = n;
        }
        if (len - off < head || len - off - head < payload) return false;
        off += head + (size_t)payload;
        pending = pending - 1 + children;
        if (pending > len - off) return false; /* each needs a byte at least */
    }
    if (used) *used = off;
    return true;
}

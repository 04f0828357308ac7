"""Enough msgpack for the tests' tensor bodies: nil, bool, int, float (as
float32 when asked through Float32, else float64), str, bin, array, map.
The tests run on whatever python3 is first on PATH, which may lack the
msgpack package; the format is small enough to write out."""
import struct


class Float32(float):
    """A float packed as msgpack float 32."""


def packb(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, Float32):
        return b"\xca" + struct.pack(">f", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        data = v.encode()
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if isinstance(v, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(v)) + bytes(v)
    if isinstance(v, (list, tuple)):
        return b"\xdd" + struct.pack(">I", len(v)) + b"".join(packb(x) for x in v)
    if isinstance(v, dict):
        return b"\xdf" + struct.pack(">I", len(v)) + b"".join(
            packb(k) + packb(x) for k, x in v.items())
    raise TypeError(type(v))


def _unpack(b, i):
    t = b[i]
    if t <= 0x7f:
        return t, i + 1
    if t >= 0xe0:
        return t - 256, i + 1
    if 0x80 <= t <= 0x8f:
        return _map(b, i + 1, t & 0x0f)
    if 0x90 <= t <= 0x9f:
        return _array(b, i + 1, t & 0x0f)
    if 0xa0 <= t <= 0xbf:
        n = t & 0x1f
        return b[i + 1:i + 1 + n].decode(), i + 1 + n
    fixed = {0xc0: None, 0xc2: False, 0xc3: True}
    if t in fixed:
        return fixed[t], i + 1
    sized = {0xc4: (">B", "bin"), 0xc5: (">H", "bin"), 0xc6: (">I", "bin"),
             0xd9: (">B", "str"), 0xda: (">H", "str"), 0xdb: (">I", "str"),
             0xdc: (">H", "array"), 0xdd: (">I", "array"), 0xde: (">H", "map"), 0xdf: (">I", "map")}
    if t in sized:
        fmt, kind = sized[t]
        size = struct.calcsize(fmt)
        n = struct.unpack_from(fmt, b, i + 1)[0]
        at = i + 1 + size
        if kind == "bin":
            return bytes(b[at:at + n]), at + n
        if kind == "str":
            return b[at:at + n].decode(), at + n
        return (_array if kind == "array" else _map)(b, at, n)
    numbers = {0xca: ">f", 0xcb: ">d", 0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
               0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
    fmt = numbers[t]
    return struct.unpack_from(fmt, b, i + 1)[0], i + 1 + struct.calcsize(fmt)


def _array(b, i, n):
    out = []
    for _ in range(n):
        v, i = _unpack(b, i)
        out.append(v)
    return out, i


def _map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = _unpack(b, i)
        v, i = _unpack(b, i)
        out[k] = v
    return out, i


def unpackb(b):
    v, end = _unpack(b, 0)
    if end != len(b):
        raise ValueError("%d bytes after the object" % (len(b) - end))
    return v

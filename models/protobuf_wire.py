"""The protobuf wire format, read without the protobuf package or a schema: just enough to walk a message's fields.

A serialized message is a sequence of fields, each a varint key ``field_number << 3 | wire_type`` followed by its value:
wire type 0 a varint, 1 eight bytes (fixed64/double), 2 a varint length and that many bytes (a string, a sub-message
or a packed repeated field), 5 four bytes (fixed32/float). Types 3 and 4 (groups) are deprecated and not read here.
What the fields mean is the caller's schema (models/caffemodel.py for Caffe's).
(https://protobuf.dev/programming-guides/encoding/)

Errors are ``WireFormatError`` (a ValueError) with the byte offset; callers add the file name.
"""
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_FIXED_WIDTH = {FIXED32: 4, FIXED64: 8}


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, a bad varint, an unknown wire type)."""


def read_varint(data, pos):
    """(value, next position) of the unsigned varint at ``data[pos]``: 7 bits per byte, least significant first, the
    high bit set on every byte but the last."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise WireFormatError(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise WireFormatError(f"varint longer than 10 bytes ending at byte {pos}")


def iter_fields(data):
    """Yield ``(field_number, wire_type, value)`` for each field of the message in ``data`` (bytes or a memoryview),
    in file order: value is an int (varint), or a memoryview of the field's bytes (fixed32, fixed64, length-delimited:
    no copy)."""
    data = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        if wire_type == VARINT:
            value, next_pos = read_varint(data, pos)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(data, pos)
            next_pos = pos + length
        elif wire_type in _FIXED_WIDTH:
            next_pos = pos + _FIXED_WIDTH[wire_type]
        else:
            raise WireFormatError(f"wire type {wire_type} (field {number}) at byte {pos} is not supported")
        if next_pos > end:
            raise WireFormatError(f"field {number} at byte {pos} runs past the end of its message ({end} bytes)")
        if wire_type != VARINT:
            value = data[pos:next_pos]
        yield number, wire_type, value
        pos = next_pos


def packed_varints(view):
    """The unsigned varints of a packed repeated integer field's bytes, as a list of ints."""
    values = []
    pos = 0
    while pos < len(view):
        value, pos = read_varint(view, pos)
        values.append(value)
    return values


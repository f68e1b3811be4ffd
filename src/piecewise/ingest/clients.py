"""Who a client is: the network an address stands for, not the address itself.

An IPv4 address is one client, as it is. An IPv6 host changes its address every day or
so (privacy extensions, RFC 8981) while its household keeps one /64 prefix, so an IPv6
client is its /64. `client_network` is the rule for one address; `network_keyed` applies
it to an Arrow column of millions of rows by mapping only its distinct values.
"""

from __future__ import annotations

import ipaddress
import socket

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piecewise.storage.dictionaries import one_dictionary

__all__ = ["IPV6_PREFIX", "client_network", "network_codes", "network_keyed", "network_keys"]

IPV6_PREFIX = 64
_HOST_BITS = 128 - IPV6_PREFIX
# An IPv4 address already in canonical form (no leading zeros, each octet 0-255): the
# rule leaves it as it is, so the vectorised form keeps it without a Python call.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
# A /64 key as `client_network` writes it (RFC 5952: lower-case groups without leading
# zeros, the "::" standing for the zero host half and any zero groups before it): a key
# is its own key, so the private store's keys are kept without a Python call either.
_NONZERO = r"[1-9a-f][0-9a-f]{0,3}"  # a group that is not zero
_GROUP = rf"(?:0|{_NONZERO})"
_CANONICAL_KEY = rf"^(?:(?:{_GROUP}:){{0,3}}{_NONZERO}::/{IPV6_PREFIX}|::/{IPV6_PREFIX})$"
_KEPT = rf"{_CANONICAL_IPV4}|{_CANONICAL_KEY}"
# An IPv6 address written with its eight groups, each in RFC 5952's form, the first not
# zero (so neither IPv4-mapped nor any other with "::" in it), as M-Lab writes nearly
# every one it records (a host's random half has no two zero groups): its /64's key is
# its first four groups, less trailing zero groups, and "::/64", made by Arrow's
# regular expressions rather than a Python call per address.
_SPELLED_OUT = rf"^({_NONZERO}(?::{_GROUP}){{3}})(?::{_GROUP}){{4}}$"


def client_network(ip: str) -> str:
    """The key of the client at `ip`: an IPv4 address in canonical form; an IPv6
    address's /64 network (`2001:db8:1:2::/64`, zone id dropped); an IPv4-mapped IPv6
    address's IPv4 address. Anything else is returned stripped of surrounding blanks
    (a blank, "", is no client: the columns' forms make it null)."""
    text = ip.strip()
    try:
        # Dispatch on ':' rather than ip_address(), which tries IPv4 first and raises.
        if ":" not in text:
            return str(ipaddress.IPv4Address(text))
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return text
    number = int(address)
    if number >> 32 == 0xFFFF:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
        return str(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    # The /64's text without building it: its last four groups are zero, the longest
    # run of zeros, so RFC 5952 puts the "::" there (a third faster than ipaddress).
    prefix = number >> _HOST_BITS
    groups = [prefix >> 48, (prefix >> 32) & 0xFFFF, (prefix >> 16) & 0xFFFF, prefix & 0xFFFF]
    while groups and groups[-1] == 0:
        groups.pop()
    return ":".join(f"{group:x}" for group in groups) + f"::/{IPV6_PREFIX}"


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_NO_HOST = bytes(8)


def _fast_network(ip: str) -> str:
    """`client_network(ip)` through the C library's parser and printer (`inet_pton`,
    `inet_ntop`: RFC 5952 text, as `ipaddress` writes it), about twenty times faster;
    whatever they refuse (blanks, zone ids, IPv4 with leading zeros, not an address)
    goes to `client_network` itself. Held equal to it by the tests."""
    if ":" in ip:
        try:
            packed = socket.inet_pton(socket.AF_INET6, ip)
        except (OSError, ValueError):  # ValueError: a NUL in the text
            return client_network(ip)
        if packed[:12] == _MAPPED_PREFIX:
            return socket.inet_ntop(socket.AF_INET, packed[12:])
        return socket.inet_ntop(socket.AF_INET6, packed[:8] + _NO_HOST) + f"/{IPV6_PREFIX}"
    return client_network(ip)


def _keys_of(values: pa.Array) -> pa.Array:
    """`client_network` of each value of a string array (nulls stay null, and a blank
    value, an export's empty field, becomes null: no address is no client, not one
    client shared by every such test): canonical IPv4 addresses and keys kept as they
    are, IPv6 addresses spelled out in full keyed by Arrow, Python called for the others
    only."""
    canonical = pc.fill_null(pc.match_substring_regex(values, _KEPT), True)
    other = pc.invert(canonical)
    positions = np.flatnonzero(other.to_numpy(zero_copy_only=False))
    if positions.size == 0:
        return values
    rest = values.take(positions)
    spelled = pc.match_substring_regex(rest, _SPELLED_OUT)  # no null among them
    prefixes = pc.replace_substring_regex(rest.filter(spelled), _SPELLED_OUT, r"\1")
    prefixes = pc.replace_substring_regex(prefixes, r"(?::0)+$", "")
    ending = pa.scalar(f"::/{IPV6_PREFIX}", values.type)
    keys = pc.binary_join_element_wise(prefixes, ending, pa.scalar("", values.type))
    left = np.flatnonzero(~spelled.to_numpy(zero_copy_only=False))
    if left.size:
        mapped = [_fast_network(v) or None for v in rest.take(left).to_pylist()]
        rest = pc.replace_with_mask(rest, pc.invert(spelled), pa.array(mapped, values.type))
    rest = pc.replace_with_mask(rest, spelled, keys)
    return pc.replace_with_mask(values, other, rest)


def _keyed_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    dictionary = pa.types.is_dictionary(kind)
    _require_text(kind.value_type if dictionary else kind, kind)
    if column.num_chunks == 0 or len(column) == 0:
        return column
    # One shared dictionary of the distinct addresses; the rows only index into it.
    encoded = one_dictionary(column)
    if not dictionary:
        keys = _keys_of(encoded.chunk(0).dictionary)
        return pa.chunked_array(
            [pc.take(keys, chunk.indices) for chunk in encoded.chunks], type=kind
        )
    # Several addresses of one /64 give one key: re-encode so the dictionary stays unique.
    recoded = _networks(encoded.chunk(0).dictionary)
    index_type = kind.index_type
    chunks = [
        pa.DictionaryArray.from_arrays(
            pc.take(recoded.indices, chunk.indices).cast(index_type),
            recoded.dictionary,
            ordered=kind.ordered,
        )
        for chunk in encoded.chunks
    ]
    return pa.chunked_array(chunks, type=kind)


def _require_text(value_type: pa.DataType, kind: pa.DataType) -> None:
    """TypeError naming `kind` unless its values (`value_type`) are strings."""
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        raise TypeError(f"client addresses must be strings, not {kind}")


def _networks(values: pa.Array) -> pa.DictionaryArray:
    """The `client_network` of each value of a string array, dictionary-encoded: one
    entry for each network, in the order each first appears (nulls stay null)."""
    return pc.dictionary_encode(_keys_of(values))


def network_codes(values: pa.Array) -> np.ndarray:
    """For each value of a string array (a column's distinct values, say), the code
    (int64, from 0) of its `client_network` among theirs: the values of one network
    share a code, in the order each network first appears; -1 for null."""
    _require_text(values.type, values.type)
    if len(values) == 0:
        return np.zeros(0, np.int64)
    return pc.fill_null(_networks(values).indices, -1).to_numpy().astype(np.int64)


def network_keys(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """`client_network` of each value of a string column (nulls stay null), as strings."""
    column = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    return _keyed_column(column)


def network_keyed(table: pa.Table, column: str = "client_ip") -> pa.Table:
    """`table` with `column` (strings, or dictionary-encoded strings) replaced by the
    `client_network` of each value, in the same type; nulls stay null."""
    index = table.schema.get_field_index(column)
    if index < 0:
        raise KeyError(f"no column {column!r} among {table.column_names}")
    field = table.schema.field(index)
    if pa.types.is_null(field.type):
        return table
    return table.set_column(index, field, _keyed_column(table.column(index)))

"""Who a client is (`piecewise.ingest.clients`): an IPv4 address as it is, an IPv6 address by
its /64, and the same rule on an Arrow column of any string type, nulls kept."""

from __future__ import annotations

import ipaddress
import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from piecewise.ingest.clients import (
    _CANONICAL_KEY,
    _SPELLED_OUT,
    _fast_network,
    _keys_of,
    client_network,
    network_codes,
    network_keyed,
)

CASES = [
    # IPv4: as it is, canonical.
    ("203.0.113.7", "203.0.113.7"),
    ("0.0.0.0", "0.0.0.0"),
    ("255.255.255.255", "255.255.255.255"),
    (" 203.0.113.7\n", "203.0.113.7"),
    # IPv6: the /64, in canonical text.
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:AAAA::1", "2001:db8:1:2::/64"),
    ("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8:0:0:1::", "2001:db8::/64"),
    ("2001:0:0:1::5", "2001:0:0:1::/64"),
    ("0:db8::1", "0:db8::/64"),
    ("::1", "::/64"),
    ("::", "::/64"),
    ("2001:db8::192.0.2.1", "2001:db8::/64"),
    ("\t2001:db8:1:2::1 ", "2001:db8:1:2::/64"),
    # Zone ids name an interface of the host, not a network: dropped.
    ("fe80::1%eth0", "fe80::/64"),
    ("fe80::abcd%12", "fe80::/64"),
    ("fe80::1%<script>", "fe80::/64"),
    # IPv4-mapped IPv6: the IPv4 client.
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("::FFFF:C000:0201", "192.0.2.1"),
    ("0:0:0:0:0:ffff:203.0.113.7", "203.0.113.7"),
    # A key is its own key.
    ("2001:db8:1:2::/64", "2001:db8:1:2::/64"),
    # Anything else: stripped, otherwise unchanged.
    ("", ""),
    ("   ", ""),
    ("unknown", "unknown"),
    (" unknown ", "unknown"),
    ("203.0.113.256", "203.0.113.256"),
    ("010.0.0.1", "010.0.0.1"),
    ("1.2.3", "1.2.3"),
    ("0x7f.0.0.1", "0x7f.0.0.1"),
    ("1.2.3.4%eth0", "1.2.3.4%eth0"),
    ("\u0663.1.1.1", "\u0663.1.1.1"),
    ("2001:db8::1::2", "2001:db8::1::2"),
    ("2001:db8:1:2:3:4:5:6:7", "2001:db8:1:2:3:4:5:6:7"),
    ("2001:db8::12345", "2001:db8::12345"),
    ("fe80::1%", "fe80::1%"),
    ("fe80::1%a%b", "fe80::1%a%b"),
    ("'; DROP TABLE tests; --", "'; DROP TABLE tests; --"),
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
    ("fe80::1%<script>alert(1)</script>", "fe80::1%<script>alert(1)</script>"),
    ("${jndi:ldap://x/a}", "${jndi:ldap://x/a}"),
    ("\x00", "\x00"),
    ("\u202e1.2.3.4", "\u202e1.2.3.4"),
    ("A" * 5000, "A" * 5000),
    (":" * 5000, ":" * 5000),
]


@pytest.mark.parametrize(("ip", "key"), CASES)
def test_each_address_has_the_documented_key(ip: str, key: str) -> None:
    assert client_network(ip) == key


@pytest.mark.parametrize(
    "kind",
    [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())],
    ids=["string", "large_string", "dictionary"],
)
def test_a_column_gets_the_same_keys_in_the_same_type_with_nulls_kept(kind: pa.DataType) -> None:
    ips = [ip for ip, _ in CASES] + [None]
    keys = [key or None for _, key in CASES] + [None]  # a blank is no client in a column
    values = pa.array(ips, pa.string())
    if pa.types.is_dictionary(kind):
        values = values.dictionary_encode()
    column = pa.chunked_array([values.slice(0, 20), values.slice(20)]).cast(kind)
    table = pa.table({"id": list(range(len(ips))), "client_ip": column, "mbps": [1.0] * len(ips)})
    keyed = network_keyed(table)
    assert keyed.schema == table.schema
    assert keyed.column("id").equals(table.column("id"))
    assert keyed.column("mbps").equals(table.column("mbps"))
    assert keyed.column("client_ip").to_pylist() == keys


def test_addresses_of_one_slash_64_become_one_dictionary_entry() -> None:
    # Parquet files read one by one: each chunk has its own dictionary.
    one = pa.array(["2001:db8:1:2::1", "2001:db8:1:2::2", None]).dictionary_encode()
    two = pa.array(["2001:db8:1:2::3", "2001:db8:9::1", "192.0.2.1"]).dictionary_encode()
    table = pa.table({"client_ip": pa.chunked_array([one, two])})
    column = network_keyed(table).column("client_ip")
    assert column.to_pylist() == [
        "2001:db8:1:2::/64",
        "2001:db8:1:2::/64",
        None,
        "2001:db8:1:2::/64",
        "2001:db8:9::/64",
        "192.0.2.1",
    ]
    # One entry per network, so codes of the dictionary count distinct clients.
    assert [chunk.dictionary.to_pylist() for chunk in column.chunks] == [
        ["2001:db8:1:2::/64", "2001:db8:9::/64", "192.0.2.1"]
    ] * 2
    assert pc.count_distinct(column.cast(pa.string())).as_py() == 3


def test_empty_and_all_null_columns_stay_as_they_are_and_any_column_can_be_keyed() -> None:
    empty = pa.table({"client_ip": pa.array([], pa.string())})
    assert network_keyed(empty).equals(empty)
    nulls = pa.table({"client_ip": pa.array([None, None], pa.string())})
    assert network_keyed(nulls).column("client_ip").to_pylist() == [None, None]
    untyped = pa.table({"client_ip": pa.array([None, None])})
    assert network_keyed(untyped).equals(untyped)
    other = pa.table({"ip": ["2001:db8::1"]})
    assert network_keyed(other, "ip").column("ip").to_pylist() == ["2001:db8::/64"]


def test_a_missing_or_non_text_column_is_an_error_that_names_it() -> None:
    with pytest.raises(KeyError, match="client_ip"):
        network_keyed(pa.table({"ip": ["192.0.2.1"]}))
    with pytest.raises(TypeError, match="strings"):
        network_keyed(pa.table({"client_ip": [1, 2]}))


# -- properties ----------------------------------------------------------------------------

PREFIXES = st.integers(min_value=1, max_value=2**64 - 1)  # ::/64 also holds IPv4-mapped
HOSTS = st.integers(min_value=0, max_value=2**64 - 1)
IPV4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


def _spellings(address: ipaddress.IPv6Address) -> list[str]:
    return [
        address.compressed,
        address.exploded,
        address.exploded.upper(),
        f"{address.compressed}%eth0",
        f" {address.compressed}\n",
    ]


@given(prefix=PREFIXES, hosts=st.lists(HOSTS, min_size=2, max_size=5))
def test_every_address_of_a_slash_64_has_that_networks_key(prefix: int, hosts: list[int]) -> None:
    network = ipaddress.IPv6Network((prefix << 64, 64))
    keys = {
        client_network(text)
        for host in hosts
        for text in _spellings(ipaddress.IPv6Address(prefix << 64 | host))
    }
    assert keys == {str(network)}


@given(prefixes=st.lists(PREFIXES, min_size=2, max_size=2, unique=True), host=HOSTS)
def test_addresses_of_different_slash_64s_never_share_a_key(prefixes: list[int], host: int) -> None:
    one, two = (str(ipaddress.IPv6Address(p << 64 | host)) for p in prefixes)
    assert client_network(one) != client_network(two)


@given(ip=IPV4)
def test_ipv4_is_unchanged_and_its_mapped_form_is_the_same_client(ip: str) -> None:
    assert client_network(ip) == ip
    assert client_network(f"::ffff:{ip}") == ip
    assert client_network(f"::FFFF:{ip}") == ip


@given(text=st.text())
def test_a_key_is_its_own_key(text: str) -> None:
    key = client_network(text)
    assert client_network(key) == key


ANY_IP = st.one_of(
    IPV4,
    st.builds(lambda p, h: str(ipaddress.IPv6Address(p << 64 | h)), PREFIXES, HOSTS),
    st.text(max_size=40),
    st.none(),
)


@given(ips=st.lists(ANY_IP, max_size=60), dictionary=st.booleans())
def test_the_column_form_agrees_with_the_one_address_form(
    ips: list[str | None], dictionary: bool
) -> None:
    values = pa.array(ips, pa.string())
    table = pa.table({"client_ip": values.dictionary_encode() if dictionary else values})
    expected = [None if ip is None else client_network(ip) or None for ip in ips]
    assert network_keyed(table).column("client_ip").to_pylist() == expected


@given(ips=st.lists(st.one_of(ANY_IP, st.sampled_from(["2001:db8:1:2::1", "2001:db8:1:2::9"]))))
def test_each_value_has_the_code_of_its_network_first_seen(ips: list[str | None]) -> None:
    """`network_codes`: values of one network share a code and only they do, numbered
    as the networks first appear; null is -1."""
    codes = network_codes(pa.array(ips, pa.string())).tolist()
    keys = [None if ip is None else client_network(ip) or None for ip in ips]
    first: dict[str, int] = {}
    for key in keys:
        if key is not None:
            first.setdefault(key, len(first))
    assert codes == [-1 if key is None else first[key] for key in keys]


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_blank_address_is_no_client(dictionary: bool) -> None:
    """An export's empty `client.IP` was one client shared by every such test: counted
    as one in `clients` and, with `one_per_client_day`, sampled down to one test a day."""
    ips = ["", " ", "\t\u00a0", "203.0.113.7", None, "", "2001:db8:1:2::1"]
    values = pa.array(ips, pa.string())
    table = pa.table({"client_ip": values.dictionary_encode() if dictionary else values})
    keyed = network_keyed(table).column("client_ip")
    assert keyed.to_pylist() == [None, None, None, "203.0.113.7", None, None, "2001:db8:1:2::/64"]
    assert network_codes(values).tolist() == [-1, -1, -1, 0, -1, -1, 1]


def test_network_codes_of_nothing_are_none_and_of_numbers_an_error() -> None:
    assert network_codes(pa.array([], pa.string())).tolist() == []
    assert network_codes(pa.array(["2001:db8::1", None], pa.large_string())).tolist() == [0, -1]
    with pytest.raises(TypeError, match="client addresses must be strings, not int64"):
        network_codes(pa.array([1, 2]))


# Text that looks like an address: what the C library's parser and Python's may judge
# differently (groups of odd lengths, dotted tails, several "::", zone ids).
ADDRESS_LIKE = st.text(alphabet="0123456789abcdefABCDEF:.%ff", max_size=45)
SPELLED_IPV6 = st.builds(
    lambda n, pick: (
        _spellings(ipaddress.IPv6Address(n))[pick]
        if pick < 5
        # An embedded IPv4 tail (RFC 4291 2.2, form 3), mapped or not.
        else str(ipaddress.IPv6Address(n)).rsplit(":", 2)[0]
        + ":"
        + str(ipaddress.IPv4Address(n & 0xFFFFFFFF))
    ),
    st.one_of(
        st.integers(min_value=0, max_value=2**128 - 1),
        st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: 0xFFFF << 32 | n),
    ),
    st.integers(min_value=0, max_value=5),
)


@given(ip=st.one_of(ADDRESS_LIKE, SPELLED_IPV6, IPV4, st.text(max_size=20)))
@example(ip=":\x00")  # a NUL: the C parser raises ValueError, not OSError
@example(ip="::1\x00")
def test_the_fast_rule_for_a_column_is_the_rule(ip: str) -> None:
    assert _fast_network(ip) == client_network(ip)


@pytest.mark.parametrize(("ip", "key"), CASES)
def test_the_fast_rule_gives_each_documented_key(ip: str, key: str) -> None:
    assert _fast_network(ip) == key


@given(prefix=st.integers(min_value=0, max_value=2**64 - 1))
def test_every_key_is_recognised_as_a_key_without_being_parsed(prefix: int) -> None:
    key = str(ipaddress.IPv6Network((prefix << 64, 64)))
    assert re.fullmatch(_CANONICAL_KEY, key)
    values = pa.array([key, None])
    assert _keys_of(values).to_pylist() == [key, None]


@given(text=st.from_regex(_CANONICAL_KEY, fullmatch=True))
def test_what_is_recognised_as_a_key_is_its_own_key(text: str) -> None:
    assert client_network(text) == text


def test_a_key_column_as_the_private_store_holds_it_is_kept() -> None:
    keys = ["2001:db8:1:2::/64", "::/64", "0:0:0:1::/64", "2001:db8::/64", "203.0.113.7"]
    not_keys = ["2001:db8:1:0::/64", "2001:0db8::/64", "2001:DB8::/64", "2001:db8::1/64"]
    for text in keys:
        assert client_network(text) == text
    for text in not_keys:
        assert not re.fullmatch(_CANONICAL_KEY, text)
    table = pa.table({"client_ip": pa.array(keys + not_keys)})
    expected = keys + [client_network(t) for t in not_keys]
    assert network_keyed(table).column("client_ip").to_pylist() == expected


# Eight groups as RFC 5952 writes each (what Arrow keys without Python), zero groups
# often: runs of them that a canonical text would have shortened, a zero first group.
EIGHT_GROUPS = st.lists(
    st.one_of(st.just(0), st.integers(min_value=0, max_value=0xFFFF)), min_size=8, max_size=8
).map(lambda groups: ":".join(f"{g:x}" for g in groups))


@given(
    ips=st.lists(
        st.one_of(
            EIGHT_GROUPS,
            st.from_regex(_SPELLED_OUT, fullmatch=True),
            SPELLED_IPV6,
            ADDRESS_LIKE,
            IPV4,
            st.none(),
        ),
        max_size=12,
    )
)
@example(ips=["2001:db8:0:0:1:2:3:4", "2001:0:0:5:a:b:c:d", "1:0:0:0:0:0:0:0"])
@example(ips=["0:0:0:0:0:ffff:102:304", "2001:db8:1:0:0:0:0:1", "2001:DB8:1:2:3:4:5:6"])
def test_the_column_rule_keys_addresses_spelled_out_as_the_rule_does(
    ips: list[str | None],
) -> None:
    keys = _keys_of(pa.array(ips, pa.string())).to_pylist()
    assert keys == [None if ip is None else client_network(ip) or None for ip in ips]

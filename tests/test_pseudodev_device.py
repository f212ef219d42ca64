"""The pseudo-device's sans-I/O core (docs/pseudodev.md sections 2-11), with no sockets at all.

Records go in through ``Device.handle_record`` and come out of ``Connection.pop_output``, so
every assertion here is about exact bytes and exact order, without timing.
"""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pseudodev_support import (
    CMD_COUNT,
    CMD_DEL,
    CMD_ECHO,
    CMD_GET,
    CMD_NEW,
    CMD_SEND,
    TEST_CODEC,
    TEST_FAMILY,
    TEST_GROUP,
    make_device,
)
from test_pseudodev_tools import (
    C_EVENT_NOTIFY,
    C_GET_PID,
    C_MC_SUBSCRIBE,
    C_PACKET_SUBSCRIBE,
    C_READ_NOTIFY,
    C_SET_PID,
    C_SOCK_PROP,
    C_WIN_PEND_PACKET_REQ,
    C_WIN_PEND_REQ,
    CONTROL_FAMILY,
    CTRL_CMD_GETFAMILY,
    CTRL_CMD_NEWFAMILY,
    NOBODY,
    REPO,
    ROOT,
    SansClient,
    attrs_of,
    control_request,
    encode,
    error_code,
    expect_error,
    family_id,
    family_request,
    genl,
    is_marker,
    nla,
    nlctrl_request,
    nlmsg,
    split_record,
    string,
)

from ovsdp.netlink.constants import (
    GENL_ADMIN_PERM,
    GENL_CMD_CAP_DO,
    GENL_CMD_CAP_DUMP,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP,
    NLM_F_ECHO,
    NLM_F_MATCH,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLM_F_ROOT,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
)
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import DoneMessage, ErrorMessage, GenlMessage, NoopMessage
from ovsdp.pseudodev.device import Credentials, Device, Request
from ovsdp.pseudodev.registry import Command, Family

DUMP = NLM_F_REQUEST | NLM_F_DUMP
ACK = NLM_F_REQUEST | NLM_F_ACK
ECHO = NLM_F_REQUEST | NLM_F_ECHO


@pytest.fixture
def device() -> Device:
    return make_device()[0]


def tid(device: Device) -> int:
    return family_id(device, TEST_FAMILY)


def new_objects(client: SansClient, names: list[str]) -> list[int]:
    """Create objects (NEW with ECHO); their ids."""
    ids = []
    for name in names:
        (reply,) = client.transact(
            family_request(client.device, CMD_NEW, {"name": name}, flags=ECHO)
        )
        assert isinstance(reply, GenlMessage), reply
        ids.append(reply.attrs["id"])
    return ids


# -- the sans-I/O claim ---------------------------------------------------------------------


def test_core_imports_neither_trio_nor_socket() -> None:
    """The core runs (a device answers nlctrl) with trio and socket impossible to import."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["trio"] = None
        sys.modules["socket"] = None
        import ovsdp.netlink
        import ovsdp.pseudodev.device
        import ovsdp.pseudodev.registry
        import ovsdp.pseudodev.nlctrl
        import ovsdp.pseudodev.control
        from ovsdp.netlink.families import NLCTRL
        from ovsdp.netlink.message import GenlMessage, decode_record, encode_genl
        device = ovsdp.pseudodev.device.Device()
        conn = device.connect(ovsdp.pseudodev.device.Credentials())
        request = GenlMessage(0x10, 1, 7, 0, 3, 2, None, {"family_name": "ovsdp_control"})
        device.handle_record(conn, encode_genl(request, NLCTRL))
        (reply,) = decode_record(conn.pop_output(), {0x10: NLCTRL})
        assert reply.attrs["family_id"] == 0x11, reply
        assert "trio" not in {m.split(".")[0] for m in sys.modules if sys.modules[m]}
        print("sans-io ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sans-io ok"


# -- PIDs (section 3) -----------------------------------------------------------------------


def test_pids_come_from_a_counter_starting_at_1_never_reused(device: Device) -> None:
    first = [SansClient(device) for _ in range(3)]
    assert [c.pid for c in first] == [1, 2, 3]
    first[1].close()
    first[0].close()
    assert 2 not in device.connections and 1 not in device.connections
    later = [SansClient(device) for _ in range(3)]
    assert [c.pid for c in later] == [4, 5, 6]  # 1 and 2 are free but never handed out again


def test_get_pid_and_replies_carry_the_connection_pid(device: Device) -> None:
    SansClient(device)
    client = SansClient(device)
    (reply,) = client.transact(control_request(device, C_GET_PID, seq=9, flags=NLM_F_REQUEST))
    assert isinstance(reply, GenlMessage)
    assert reply.attrs == {"sock_pid": 2}
    assert (reply.pid, reply.seq, reply.cmd) == (2, 9, C_GET_PID)
    # nlmsg_pid of a request is not checked: a wrong one changes nothing
    request = bytearray(family_request(device, CMD_ECHO, {"id": 1}, seq=4))
    struct.pack_into("=I", request, 12, 0xDEAD)
    (echo,) = client.transact(bytes(request))
    assert isinstance(echo, GenlMessage) and echo.pid == 2 and echo.attrs == {"id": 1}


def test_claim_pid(device: Device) -> None:
    a, b = SansClient(device), SansClient(device)
    (reply,) = a.transact(control_request(device, C_SET_PID, {"sock_pid": 100}, seq=1))
    assert isinstance(reply, GenlMessage) and reply.attrs == {"sock_pid": 100}
    assert reply.pid == 100  # the answer already comes from the new PID
    assert a.pid == 100 and device.connections[100] is a.conn and 1 not in device.connections
    (reply,) = a.transact(control_request(device, C_GET_PID, seq=2))
    assert isinstance(reply, GenlMessage) and reply.attrs == {"sock_pid": 100}
    # held by another connection
    err = expect_error(
        b.transact(control_request(device, C_SET_PID, {"sock_pid": 100}, seq=3)), errno.EADDRINUSE
    )
    assert err.seq == 3 and err.reason
    assert b.pid == 2
    # 0 is not a PID; SOCK_PID is required
    expect_error(b.transact(control_request(device, C_SET_PID, {"sock_pid": 0})), errno.EINVAL)
    expect_error(b.transact(control_request(device, C_SET_PID, {})), errno.EINVAL)
    # claiming the PID one already holds is fine; a PID freed by a claim can be claimed again
    (reply,) = b.transact(control_request(device, C_SET_PID, {"sock_pid": 2}))
    assert isinstance(reply, GenlMessage) and reply.attrs == {"sock_pid": 2}
    (reply,) = b.transact(control_request(device, C_SET_PID, {"sock_pid": 1}))
    assert isinstance(reply, GenlMessage) and b.pid == 1
    (reply,) = b.transact(control_request(device, C_SET_PID, {"sock_pid": 0xFFFFFFFF}))
    assert isinstance(reply, GenlMessage) and b.pid == 0xFFFFFFFF
    # unicast follows the claimed PID
    b.send(family_request(device, CMD_SEND, {"count": 1, "pid": 0xFFFFFFFF}))
    (upcall,) = b.messages()
    assert isinstance(upcall, GenlMessage) and upcall.cmd == CMD_SEND and upcall.seq == 0


def test_counter_skips_claimed_pids(device: Device) -> None:
    a = SansClient(device)  # PID 1; the counter is at 2
    a.transact(control_request(device, C_SET_PID, {"sock_pid": 3}))
    assert a.pid == 3
    assert [SansClient(device).pid for _ in range(3)] == [2, 4, 5]


def test_a_claimed_pid_is_never_handed_out_by_the_counter_after_release(device: Device) -> None:
    """Section 10: a closed connection's PID "can then be claimed again, but is never handed
    out by the counter" -- also a PID that was claimed ahead of the counter."""
    a = SansClient(device)  # PID 1; the counter is at 2
    a.transact(control_request(device, C_SET_PID, {"sock_pid": 4}))
    a.close()
    assert 4 not in device.connections
    pids = [SansClient(device).pid for _ in range(4)]
    assert 4 not in pids, pids
    assert pids == sorted(pids) and len(set(pids)) == 4
    # but a client may claim it again
    c = SansClient(device)
    c.transact(control_request(device, C_SET_PID, {"sock_pid": 4}))
    assert c.pid == 4


def test_unicast_to_a_closed_pid_is_lost(device: Device) -> None:
    a, b = SansClient(device), SansClient(device)
    target = b.pid
    b.close()
    assert device.unicast(target, b"x" * 20) is False
    a.send(family_request(device, CMD_SEND, {"count": 3, "pid": target}, flags=ACK, seq=5))
    (ack,) = a.messages()  # the sender sees success; the messages are simply lost
    assert error_code(ack) == 0
    assert b.records() == []


# -- permissions (section 2) ----------------------------------------------------------------


ADMIN_GID = 4242
MUTATING = [
    (CMD_NEW, {"name": "x"}),
    (CMD_DEL, {"id": 0}),
    (CMD_SEND, {"count": 1}),
]


@pytest.mark.parametrize(
    ("creds", "privileged"),
    [
        (ROOT, True),
        (Credentials(10, 0, 1000, ()), True),  # uid 0 with any group
        (Credentials(10, 1000, ADMIN_GID, ()), True),  # primary group
        (Credentials(10, 1000, 1000, (27, ADMIN_GID)), True),  # supplementary group
        (Credentials(10, 1000, 1000, (27, 100)), False),
        (Credentials(10, ADMIN_GID, 1000, ()), False),  # a uid equal to the gid means nothing
    ],
)
def test_state_changing_commands_need_uid_0_or_the_admin_group(
    creds: Credentials, privileged: bool
) -> None:
    device = make_device(admin_gid=ADMIN_GID)[0]
    SansClient(device).transact(family_request(device, CMD_NEW, {"name": "seed"}))
    client = SansClient(device, creds)
    for cmd, attrs in MUTATING:
        out = client.transact(family_request(device, cmd, attrs, flags=ACK, seq=cmd))
        if privileged:
            assert [error_code(m) for m in out] == [0], out
        else:
            err = expect_error(out, errno.EPERM)
            assert err.seq == cmd and err.request[1] == tid(device)
            assert err.reason and "uid 0" in err.reason
    if not privileged:
        # reads stay open: GET, a dump, nlctrl, every control command
        (got,) = client.transact(family_request(device, CMD_GET, {"id": 0}, seq=20))
        assert isinstance(got, GenlMessage) and got.attrs["name"] == "seed"
        dumped = client.transact(family_request(device, CMD_COUNT, {"count": 3}, flags=DUMP))
        assert [type(m) for m in dumped] == [GenlMessage] * 3 + [DoneMessage]
        (fam,) = client.transact(nlctrl_request({"family_name": TEST_FAMILY}))
        assert isinstance(fam, GenlMessage)
        group = device.group_id(TEST_FAMILY, TEST_GROUP)
        assert (
            client.transact(
                control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1})
            )
            == []
        )
        (props,) = client.transact(control_request(device, C_SOCK_PROP, {"rxq_limit": 8192}))
        assert isinstance(props, GenlMessage) and props.attrs["rxq_limit"] == 8192
        (claimed,) = client.transact(control_request(device, C_SET_PID, {"sock_pid": 777}))
        assert isinstance(claimed, GenlMessage) and client.pid == 777


def test_without_an_admin_group_only_root_may_change_state(device: Device) -> None:
    client = SansClient(device, Credentials(10, 1000, 0, (0,)))  # gid 0 is not an admin group
    expect_error(client.transact(family_request(device, CMD_NEW, {"name": "x"})), errno.EPERM)


# -- nlctrl (section 4) ---------------------------------------------------------------------


def test_nlctrl_ids_and_versions(device: Device) -> None:
    client = SansClient(device)
    (own,) = client.transact(nlctrl_request({"family_name": "nlctrl"}, seq=3))
    assert isinstance(own, GenlMessage)
    assert (own.type, own.cmd, own.version, own.seq, own.pid) == (0x10, CTRL_CMD_NEWFAMILY, 2, 3, 1)
    assert own.attrs["family_id"] == 0x10 and own.attrs["version"] == 2
    assert own.attrs["hdrsize"] == 0
    assert own.attrs["mcast_groups"] == [{"name": "notify", "id": 0x10}]
    assert [op["id"] for op in own.attrs["ops"]] == [CTRL_CMD_GETFAMILY]
    assert own.attrs["ops"][0]["flags"] == GENL_CMD_CAP_DO | GENL_CMD_CAP_DUMP
    (control,) = client.transact(nlctrl_request({"family_name": CONTROL_FAMILY}))
    assert isinstance(control, GenlMessage)
    attrs = control.attrs
    assert (attrs["family_id"], attrs["version"], attrs["hdrsize"]) == (0x11, 1, 0)
    assert attrs["maxattr"] == 10
    assert "mcast_groups" not in attrs  # no groups: no attribute
    ops = {op["id"]: op["flags"] for op in attrs["ops"]}
    assert ops == {
        C_MC_SUBSCRIBE: GENL_CMD_CAP_DO,
        C_SOCK_PROP: GENL_CMD_CAP_DO,
        C_GET_PID: GENL_CMD_CAP_DO,
        C_SET_PID: GENL_CMD_CAP_DO,
    }  # no ADMIN_PERM: control commands need no privilege


def test_nlctrl_getfamily_by_name_and_by_id(device: Device) -> None:
    client = SansClient(device)
    (by_name,) = client.transact(nlctrl_request({"family_name": TEST_FAMILY}))
    assert isinstance(by_name, GenlMessage)
    fid = by_name.attrs["family_id"]
    assert fid == tid(device) == 0x12
    (by_id,) = client.transact(nlctrl_request({"family_id": fid}))
    assert isinstance(by_id, GenlMessage)
    assert by_id.attrs == by_name.attrs
    attrs = by_name.attrs
    assert attrs["family_name"] == TEST_FAMILY
    assert (attrs["version"], attrs["hdrsize"], attrs["maxattr"]) == (1, 4, 5)
    ops = {op["id"]: op["flags"] for op in attrs["ops"]}
    assert ops == {
        CMD_ECHO: GENL_CMD_CAP_DO,
        CMD_NEW: GENL_CMD_CAP_DO | GENL_ADMIN_PERM,
        CMD_DEL: GENL_CMD_CAP_DO | GENL_ADMIN_PERM,
        CMD_GET: GENL_CMD_CAP_DO | GENL_CMD_CAP_DUMP,
        CMD_COUNT: GENL_CMD_CAP_DUMP,
        CMD_SEND: GENL_CMD_CAP_DO | GENL_ADMIN_PERM,
    }
    assert attrs["mcast_groups"] == [
        {"name": TEST_GROUP, "id": device.group_id(TEST_FAMILY, TEST_GROUP)}
    ]


def test_nlctrl_wire_layout(device: Device) -> None:
    """CTRL_ATTR_* numbers, OPS and MCAST_GROUPS as nests of nests numbered 1, 2, ..."""
    client = SansClient(device)
    client.send(genl(0x10, CTRL_CMD_GETFAMILY, nla(2, string(TEST_FAMILY)), seq=5, version=2))
    (record,) = client.records()
    ((hdr, data),) = split_record(record)
    assert hdr == (len(data), 0x10, 0, 5, 1)
    assert data[16:20] == bytes([CTRL_CMD_NEWFAMILY, 2, 0, 0])
    attrs = dict(attrs_of(data[20:]))
    assert struct.unpack("=H", attrs[1]) == (0x12,)  # FAMILY_ID u16
    assert attrs[2] == string(TEST_FAMILY)
    assert struct.unpack("=I", attrs[3]) == (1,)  # VERSION
    assert struct.unpack("=I", attrs[4]) == (4,)  # HDRSIZE
    assert struct.unpack("=I", attrs[5]) == (5,)  # MAXATTR
    ops = attrs_of(attrs[6])
    assert [t & 0x3FFF for t, _ in ops] == list(range(1, len(ops) + 1))
    first = dict(attrs_of(ops[0][1]))
    assert struct.unpack("=II", first[1] + first[2]) == (CMD_ECHO, GENL_CMD_CAP_DO)
    groups = attrs_of(attrs[7])
    assert [t & 0x3FFF for t, _ in groups] == [1]
    group = dict(attrs_of(groups[0][1]))
    assert group[1] == string(TEST_GROUP)
    assert struct.unpack("=I", group[2]) == (device.group_id(TEST_FAMILY, TEST_GROUP),)


def test_nlctrl_dump_lists_every_family(device: Device) -> None:
    client = SansClient(device)
    client.send(nlctrl_request(flags=DUMP, seq=8))
    messages = client.messages()
    *families, done = messages
    assert isinstance(done, DoneMessage) and done.error == 0 and done.seq == 8
    assert all(isinstance(m, GenlMessage) and m.flags & NLM_F_MULTI for m in families)
    by_name = {m.attrs["family_name"]: m.attrs["family_id"] for m in families}  # type: ignore[union-attr]
    assert by_name == {"nlctrl": 0x10, CONTROL_FAMILY: 0x11, TEST_FAMILY: 0x12}


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ({"family_name": "no_such_family"}, errno.ENOENT),
        ({"family_id": 0x7777}, errno.ENOENT),
        ({}, errno.EINVAL),
    ],
)
def test_nlctrl_errors(device: Device, attrs: dict, code: int) -> None:
    client = SansClient(device)
    err = expect_error(client.transact(nlctrl_request(attrs, seq=6)), code)
    assert err.seq == 6 and err.reason


def test_nlctrl_name_longer_than_15_bytes_is_erange(device: Device) -> None:
    client = SansClient(device)
    msg = genl(0x10, CTRL_CMD_GETFAMILY, nla(2, string("x" * 16)), seq=2, version=2)
    err = expect_error(client.transact(msg), errno.ERANGE)
    assert err.offset == 20  # the attribute, counted from the start of the message


def test_nlctrl_notify_group_can_be_joined_and_stays_silent(device: Device) -> None:
    client = SansClient(device)
    out = client.transact(
        control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": 0x10, "mcast_join": 1}, flags=ACK)
    )
    assert [error_code(m) for m in out] == [0]
    assert 0x10 in client.conn.groups
    SansClient(device).close()
    assert client.records() == []


# -- the control family (section 5) ---------------------------------------------------------


@pytest.mark.parametrize(
    "cmd",
    [
        C_WIN_PEND_REQ,
        C_WIN_PEND_PACKET_REQ,
        C_PACKET_SUBSCRIBE,
        C_EVENT_NOTIFY,
        C_READ_NOTIFY,
        9,
        200,
    ],
)
def test_unsupported_control_commands(device: Device, cmd: int) -> None:
    client = SansClient(device)
    err = expect_error(client.transact(control_request(device, cmd, seq=cmd + 1)), errno.EOPNOTSUPP)
    assert err.seq == cmd + 1 and err.reason


def test_mc_subscribe(device: Device) -> None:
    client = SansClient(device)
    group = device.group_id(TEST_FAMILY, TEST_GROUP)
    join = {"mcast_grp": group, "mcast_join": 1}
    # silent success
    assert client.transact(control_request(device, C_MC_SUBSCRIBE, join)) == []
    assert client.conn in device.groups[group] and group in client.conn.groups
    # NLM_F_ECHO: the two attributes; NLM_F_ACK: an ACK
    (echo,) = client.transact(control_request(device, C_MC_SUBSCRIBE, join, flags=ECHO, seq=4))
    assert isinstance(echo, GenlMessage)
    assert (echo.cmd, echo.seq, echo.attrs) == (C_MC_SUBSCRIBE, 4, join)
    leave = {"mcast_grp": group, "mcast_join": 0}
    (ack,) = client.transact(control_request(device, C_MC_SUBSCRIBE, leave, flags=ACK, seq=5))
    assert error_code(ack) == 0 and ack.seq == 5
    assert client.conn not in device.groups[group] and not client.conn.groups
    # errors: unknown group, a join value other than 0/1, missing attributes
    for attrs in (
        {"mcast_grp": 0x999, "mcast_join": 1},
        {"mcast_grp": 0x999, "mcast_join": 0},
        {"mcast_grp": group, "mcast_join": 2},
        {"mcast_grp": group},
        {"mcast_join": 1},
    ):
        expect_error(client.transact(control_request(device, C_MC_SUBSCRIBE, attrs)), errno.EINVAL)
    assert not client.conn.groups


def test_sock_prop_reports_every_property(device: Device) -> None:
    client = SansClient(device)
    (props,) = client.transact(control_request(device, C_SOCK_PROP, seq=3))
    assert isinstance(props, GenlMessage) and props.cmd == C_SOCK_PROP and props.seq == 3
    assert dict(props.attrs) == {
        "sock_proto": 16,
        "sock_pid": 1,
        "txn_markers": 0,
        "rxq_limit": 4 << 20,
        "rxq_bytes": 0,
        "rxq_dropped": 0,
        "mcast_groups": (),
    }
    # the same on the wire: attributes 4..10 all present
    client.send(genl(family_id(device, CONTROL_FAMILY), C_SOCK_PROP))
    ((_hdr, data),) = split_record(client.records()[0])
    assert sorted(t for t, _ in attrs_of(data[20:])) == [4, 5, 6, 7, 8, 9, 10]
    group = device.group_id(TEST_FAMILY, TEST_GROUP)
    client.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": 0x10, "mcast_join": 1}))
    client.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}))
    (props,) = client.transact(
        control_request(device, C_SOCK_PROP, {"sock_proto": 16, "rxq_limit": 4096})
    )
    assert isinstance(props, GenlMessage)
    assert props.attrs["rxq_limit"] == 4096
    assert sorted(props.attrs["mcast_groups"]) == sorted([0x10, group])


def test_sock_prop_errors_change_nothing(device: Device) -> None:
    client = SansClient(device)
    expect_error(
        client.transact(control_request(device, C_SOCK_PROP, {"sock_proto": 17})),
        errno.EPROTONOSUPPORT,
    )
    for attrs in (
        {"rxq_limit": 0, "txn_markers": 1},
        {"rxq_limit": 4095, "txn_markers": 1},
        {"txn_markers": 2, "rxq_limit": 1 << 20},
        {"sock_proto": 1, "txn_markers": 1, "rxq_limit": 1 << 20},
    ):
        out = client.transact(control_request(device, C_SOCK_PROP, attrs))
        assert len(out) == 1 and isinstance(out[0], ErrorMessage) and out[0].error < 0, attrs
    assert client.conn.txn_markers is False
    assert client.conn.rxq_limit == 4 << 20
    # not even a marker for those: markers are still off
    client.send(family_request(device, CMD_NEW, {"name": "silent"}))
    assert client.records() == []


# -- requests and replies (section 6) -------------------------------------------------------


def test_messages_of_a_record_are_handled_in_order_and_failures_do_not_stop_others(
    device: Device,
) -> None:
    client = SansClient(device)
    record = [
        family_request(device, CMD_ECHO, {"id": 1}, seq=10),
        family_request(device, CMD_GET, {"id": 99}, seq=11),  # ENOENT
        family_request(device, CMD_NEW, {"name": "a"}, seq=12, flags=ECHO),
        genl(0x7777, 1, seq=13),  # unknown family
        family_request(device, CMD_GET, {"id": 0}, seq=14),
        family_request(device, CMD_DEL, {"id": 0}, seq=15, flags=ACK),
        family_request(device, CMD_GET, {"id": 0}, seq=16),  # deleted by the one before
        family_request(device, CMD_ECHO, {"id": 2}, seq=17),
    ]
    client.send(*record)
    out = client.messages()
    summary = [
        (m.seq, "reply" if isinstance(m, GenlMessage) else errno.errorcode.get(-m.error, "ACK"))
        for m in out
        if isinstance(m, GenlMessage | ErrorMessage)
    ]
    assert summary == [
        (10, "reply"),
        (11, "ENOENT"),
        (12, "reply"),
        (13, "ENOENT"),
        (14, "reply"),
        (15, "ACK"),
        (16, "ENOENT"),
        (17, "reply"),
    ]
    assert out[4].attrs == {"name": "a", "id": 0}  # type: ignore[union-attr]


def test_records_are_handled_in_order(device: Device) -> None:
    client = SansClient(device)
    for i in range(1, 301):
        client.send(family_request(device, CMD_ECHO, {"id": i}, seq=i))
    out = client.messages()
    assert [(m.seq, m.attrs["id"]) for m in out] == [(i, i) for i in range(1, 301)]  # type: ignore[union-attr]


def test_replies_echo_seq_pid_type_and_command(device: Device) -> None:
    client = SansClient(device)
    client.transact(control_request(device, C_SET_PID, {"sock_pid": 4321}))
    for cmd, attrs, flags in (
        (CMD_ECHO, {"id": 5, "name": "e"}, NLM_F_REQUEST),
        (CMD_NEW, {"name": "n"}, ECHO),
        (CMD_GET, {"id": 0}, NLM_F_REQUEST),
        (CMD_DEL, {"id": 0}, ECHO),
    ):
        (reply,) = client.transact(
            family_request(device, cmd, attrs, flags=flags, seq=1000 + cmd, dp_ifindex=7)
        )
        assert isinstance(reply, GenlMessage)
        assert (reply.type, reply.seq, reply.pid, reply.cmd, reply.version) == (
            tid(device),
            1000 + cmd,
            4321,
            cmd,
            1,
        )
    (echo,) = client.transact(family_request(device, CMD_ECHO, {"payload": b"\x00\xff" * 100}))
    assert isinstance(echo, GenlMessage) and echo.attrs == {"payload": b"\x00\xff" * 100}


def test_error_layout(device: Device) -> None:
    """NLMSG_ERROR: -errno, the request's 16-byte header only (CAPPED), an ext-ack reason."""
    client = SansClient(device)
    request = family_request(device, CMD_GET, {"id": 42}, seq=77)
    client.send(request)
    (record,) = client.records()
    ((hdr, data),) = split_record(record)
    assert hdr[1:] == (NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 77, 1)
    assert struct.unpack_from("=i", data, 16) == (-errno.ENOENT,)
    assert data[20:36] == request[:16]
    tlvs = dict(attrs_of(data[36:]))
    assert tlvs[1].endswith(b"\0") and b"42" in tlvs[1]  # NLMSGERR_ATTR_MSG
    assert 2 not in tlvs  # no one attribute is to blame


def test_error_offset_points_at_the_bad_attribute(device: Device) -> None:
    client = SansClient(device)
    fid = tid(device)
    name = nla(2, string("ab"))  # 8 bytes
    bad = nla(1, b"\x01\x00")  # id must be a u32
    err = expect_error(
        client.transact(genl(fid, CMD_ECHO, name + bad, fam_hdr=b"\0" * 4, seq=3)), errno.EINVAL
    )
    assert err.offset == 16 + 4 + 4 + len(name)
    assert err.request[3] == 3 and err.reason


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        (nla(2, string("x" * 16)), errno.ERANGE),  # name longer than 15 bytes
        (nla(2, b"abc"), errno.EINVAL),  # string without NUL
        (nla(1, b"\1\0\0\0\0\0\0\0"), errno.EINVAL),  # u32 of 8 bytes
        (struct.pack("=HH", 40, 1), errno.EINVAL),  # nla_len past the message
        (struct.pack("=HH", 2, 1), errno.EINVAL),  # nla_len below 4
        (b"\1\2", errno.EINVAL),  # trailing bytes shorter than an attribute header
    ],
)
def test_bad_attributes(device: Device, attrs: bytes, code: int) -> None:
    client = SansClient(device)
    msg = genl(tid(device), CMD_ECHO, attrs, fam_hdr=b"\0" * 4, seq=9)
    out = client.transact(msg)
    err = expect_error(out, code)
    assert err.seq == 9 and err.reason
    # the connection goes on
    (echo,) = client.transact(family_request(device, CMD_ECHO, {"id": 1}, seq=10))
    assert isinstance(echo, GenlMessage) and echo.seq == 10


def test_missing_family_header_and_unknown_family_and_command(device: Device) -> None:
    client = SansClient(device)
    fid = tid(device)
    expect_error(client.transact(nlmsg(fid, seq=1)), errno.EINVAL)  # no genlmsghdr
    expect_error(client.transact(genl(fid, CMD_ECHO, seq=2)), errno.EINVAL)  # no ovs_header
    expect_error(client.transact(genl(0x7777, CMD_ECHO, seq=3)), errno.ENOENT)
    expect_error(client.transact(genl(0xFFFF, CMD_ECHO, seq=3)), errno.ENOENT)
    expect_error(client.transact(genl(fid, 99, fam_hdr=b"\0" * 4, seq=4)), errno.EOPNOTSUPP)
    expect_error(client.transact(genl(fid, 0, fam_hdr=b"\0" * 4, seq=4)), errno.EOPNOTSUPP)


def test_missing_required_attribute(device: Device) -> None:
    client = SansClient(device)
    expect_error(client.transact(family_request(device, CMD_NEW, {})), errno.EINVAL)
    expect_error(client.transact(family_request(device, CMD_GET, {})), errno.EINVAL)
    # also for a dump: an NLMSG_ERROR and nothing else (no dump starts)
    out = client.transact(family_request(device, CMD_COUNT, {}, flags=DUMP, seq=5))
    err = expect_error(out, errno.EINVAL)
    assert err.seq == 5 and not client.conn.dumping


def test_dump_flag_mismatches_are_eopnotsupp(device: Device) -> None:
    client = SansClient(device)
    # ECHO cannot be dumped; COUNT can only be dumped
    expect_error(client.transact(family_request(device, CMD_ECHO, flags=DUMP)), errno.EOPNOTSUPP)
    expect_error(client.transact(family_request(device, CMD_COUNT, {"count": 1})), errno.EOPNOTSUPP)
    # NLM_F_DUMP means both ROOT and MATCH: either alone is no dump
    for half in (NLM_F_ROOT, NLM_F_MATCH):
        expect_error(
            client.transact(
                family_request(device, CMD_COUNT, {"count": 1}, flags=NLM_F_REQUEST | half)
            ),
            errno.EOPNOTSUPP,
        )
    assert not client.conn.dumping


def test_ack_follows_the_replies_and_not_an_error(device: Device) -> None:
    client = SansClient(device)
    out = client.transact(family_request(device, CMD_ECHO, {"id": 1}, flags=ACK, seq=3))
    assert [type(m) for m in out] == [GenlMessage, ErrorMessage]
    assert error_code(out[1]) == 0 and out[1].seq == 3
    out = client.transact(
        family_request(device, CMD_NEW, {"name": "x"}, flags=ACK | NLM_F_ECHO, seq=4)
    )
    assert [type(m) for m in out] == [GenlMessage, ErrorMessage] and error_code(out[1]) == 0
    # an ACK's layout: error 0, the request header, no TLVs
    request = family_request(device, CMD_DEL, {"id": 0}, flags=ACK, seq=5)
    client.send(request)
    ((hdr, data),) = split_record(client.records()[0])
    assert hdr == (36, NLMSG_ERROR, NLM_F_CAPPED, 5, 1)
    assert data[16:20] == b"\0\0\0\0" and data[20:36] == request[:16]
    # a failure is its own answer: no ACK after it
    out = client.transact(family_request(device, CMD_GET, {"id": 0}, flags=ACK, seq=6))
    expect_error(out, errno.ENOENT)


def test_silent_success_echo_and_ack(device: Device) -> None:
    client = SansClient(device)
    assert client.transact(family_request(device, CMD_NEW, {"name": "quiet"})) == []
    assert client.transact(family_request(device, CMD_DEL, {"id": 0})) == []
    (new,) = client.transact(family_request(device, CMD_NEW, {"name": "loud"}, flags=ECHO, seq=2))
    assert isinstance(new, GenlMessage) and new.attrs == {"name": "loud", "id": 0}
    (deleted,) = client.transact(family_request(device, CMD_DEL, {"id": 0}, flags=ECHO, seq=3))
    assert isinstance(deleted, GenlMessage) and deleted.cmd == CMD_DEL
    assert deleted.attrs == {"name": "loud", "id": 0}
    (ack,) = client.transact(family_request(device, CMD_NEW, {"name": "acked"}, flags=ACK, seq=4))
    assert error_code(ack) == 0
    # GET-style commands always answer
    assert len(client.transact(family_request(device, CMD_GET, {"id": 0}))) == 1
    assert len(client.transact(family_request(device, CMD_ECHO, {}))) == 1


def test_non_requests_and_control_types_are_ignored_acked_if_asked(device: Device) -> None:
    client = SansClient(device)
    fid = tid(device)
    echo = genl(fid, CMD_ECHO, fam_hdr=b"\0" * 4, flags=0, seq=1)  # NLM_F_REQUEST clear
    assert client.transact(echo) == []
    (ack,) = client.transact(genl(fid, CMD_ECHO, fam_hdr=b"\0" * 4, flags=NLM_F_ACK, seq=2))
    assert error_code(ack) == 0 and ack.seq == 2
    for mtype in (0, NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, 4, 0xF):
        assert client.transact(nlmsg(mtype, b"\0" * 4, flags=NLM_F_REQUEST, seq=3)) == []
        (ack,) = client.transact(nlmsg(mtype, flags=NLM_F_REQUEST | NLM_F_ACK, seq=4))
        assert isinstance(ack, ErrorMessage)
        assert error_code(ack) == 0 and ack.request[1] == mtype


def test_framing_errors_end_the_record(device: Device) -> None:
    client = SansClient(device)
    fid = tid(device)
    good = family_request(device, CMD_ECHO, {"id": 1}, seq=1)
    later = family_request(device, CMD_ECHO, {"id": 3}, seq=3)
    # nlmsg_len below 16: EINVAL; what follows is not looked at
    short = struct.pack("=IHHII", 8, fid, NLM_F_REQUEST, 2, 0)
    out = client.transact(good, short, later)
    assert isinstance(out[0], GenlMessage) and out[0].seq == 1
    err = expect_error(out[1:], errno.EINVAL)
    assert err.request == (8, fid, NLM_F_REQUEST, 2, 0) and err.seq == 2 and err.reason
    # nlmsg_len past the end of the record: EMSGSIZE
    long = struct.pack("=IHHII", 400, fid, NLM_F_REQUEST, 4, 0) + b"\0" * 8
    out = client.transact(good, long)
    assert isinstance(out[0], GenlMessage)
    err = expect_error(out[1:], errno.EMSGSIZE)
    assert err.request == (400, fid, NLM_F_REQUEST, 4, 0)
    # a truncated header: EINVAL, the bytes found echoed zero-filled
    for tail in (b"\x01", b"\x14\0\0\0\x12\0\x01\0\x09", b"\xff" * 15):
        client.send(good + tail)
        first, second = client.records()
        assert [h[3] for h, _ in split_record(first)] == [1]
        ((hdr, data),) = split_record(second)
        assert hdr[1] == NLMSG_ERROR
        assert struct.unpack_from("=i", data, 16) == (-errno.EINVAL,)
        assert data[20:36] == tail.ljust(16, b"\0")
    # a record of only garbage shorter than a header
    err = expect_error(client.transact(b"\x07" * 5), errno.EINVAL)
    assert err.request == struct.unpack("=IHHII", b"\x07" * 5 + b"\0" * 11)
    # the connection goes on
    (echo,) = client.transact(later)
    assert isinstance(echo, GenlMessage) and echo.seq == 3


def test_an_empty_record_has_no_messages(device: Device) -> None:
    client = SansClient(device)
    assert client.transact() == []
    client.transact(control_request(device, C_SOCK_PROP, {"txn_markers": 1}))
    client.send()
    (marker,) = client.messages()
    assert is_marker(marker, 0, client.pid)


# -- transaction markers (section 7) --------------------------------------------------------


def test_markers(device: Device) -> None:
    client = SansClient(device)
    # off when a connection opens
    assert client.transact(family_request(device, CMD_NEW, {"name": "a"}, seq=1)) == []
    # the record that turns them on gets none
    (props,) = client.transact(control_request(device, C_SOCK_PROP, {"txn_markers": 1}, seq=2))
    assert isinstance(props, GenlMessage) and props.attrs["txn_markers"] == 1
    # a silent record: just the marker, as its own 16-byte record
    client.send(family_request(device, CMD_NEW, {"name": "b"}, seq=3))
    (record,) = client.records()
    assert record == struct.pack("=IHHII", 16, NLMSG_NOOP, 0, 3, 1)
    # the last message's seq, not the largest; after every answer of the record
    client.send(
        family_request(device, CMD_ECHO, {"id": 1}, seq=40),
        family_request(device, CMD_GET, {"id": 77}, seq=50),
        family_request(device, CMD_DEL, {"id": 1}, seq=41),
    )
    out = client.messages()
    assert [type(m) for m in out] == [GenlMessage, ErrorMessage, NoopMessage]
    assert is_marker(out[-1], 41, 1)
    # unsolicited messages the record caused come before its marker
    client.send(family_request(device, CMD_SEND, {"count": 2, "pid": 1}, seq=60))
    out = client.messages()
    assert [(type(m), m.seq) for m in out] == [
        (GenlMessage, 0),
        (GenlMessage, 0),
        (NoopMessage, 60),
    ]
    # the marker follows the answers to a record with a framing error too
    client.send(struct.pack("=IHHII", 99, tid(device), 1, 61, 0))
    out = client.messages()
    assert error_code(out[0]) == errno.EMSGSIZE and is_marker(out[1], 61, 1)
    # the record that turns them off gets one; then none
    out = client.transact(control_request(device, C_SOCK_PROP, {"txn_markers": 0}, seq=70))
    assert [type(m) for m in out] == [GenlMessage, NoopMessage] and is_marker(out[1], 70, 1)
    assert client.transact(family_request(device, CMD_NEW, {"name": "c"}, seq=71)) == []


def test_marker_comes_after_done_and_other_markers_do_not_wait_for_the_dump() -> None:
    device = make_device(dump_record_bytes=256)[0]
    client = SansClient(device)
    client.transact(control_request(device, C_SOCK_PROP, {"txn_markers": 1}))
    client.send(family_request(device, CMD_COUNT, {"count": 100}, flags=DUMP, seq=5))
    first = client.pop()
    assert first is not None and all(h[1] == tid(device) for h, _ in split_record(first))
    # an interleaved request: its answer and marker come before the rest of the dump
    client.send(family_request(device, CMD_ECHO, {"id": 9}, seq=6))
    out = [m for r in client.records() for m in client.decode(r)]
    assert isinstance(out[0], GenlMessage) and out[0].seq == 6
    assert is_marker(out[1], 6, client.pid)
    rest = out[2:]
    assert isinstance(rest[-1], NoopMessage) and is_marker(rest[-1], 5, client.pid)
    assert isinstance(rest[-2], DoneMessage) and rest[-2].seq == 5
    assert all(isinstance(m, GenlMessage) and m.seq == 5 for m in rest[:-2])
    # a record that starts a dump and has a message after it: that message is answered at
    # once, and the record's marker (the last message's seq) waits for the DONE
    client.send(
        family_request(device, CMD_COUNT, {"count": 50}, flags=DUMP, seq=7),
        family_request(device, CMD_ECHO, {"id": 8}, seq=8),
    )
    out = [m for r in client.records() for m in client.decode(r)]
    assert isinstance(out[0], GenlMessage) and out[0].seq == 8
    assert [type(m) for m in out[-2:]] == [DoneMessage, NoopMessage]
    assert is_marker(out[-1], 8, client.pid) and out[-2].seq == 7
    assert len(out) == 1 + 50 + 2


# -- dumps (section 8) ----------------------------------------------------------------------


def test_dump_records_are_packed_and_end_with_done(device: Device) -> None:
    client = SansClient(device)
    payload = b"p" * 100
    client.send(
        family_request(device, CMD_COUNT, {"count": 2000, "payload": payload}, flags=DUMP, seq=11)
    )
    records = client.records()
    sizes = [len(r) for r in records]
    messages = [(h, d) for r in records for h, d in split_record(r)]
    entry_size = messages[0][0][0]
    assert len(records) > 3
    assert all(s <= (32 << 10) + entry_size for s in sizes), sizes
    assert all(s >= (32 << 10) for s in sizes[:-1]), sizes  # packed up to 32 KiB
    *entries, (done_hdr, done) = messages
    assert len(entries) == 2000
    ids = [struct.unpack_from("=I", d, 28)[0] for _h, d in entries]  # first attribute: id
    assert ids == list(range(2000))
    for hdr, _data in entries:
        assert hdr[1:] == (tid(device), NLM_F_MULTI, 11, 1)
    assert done_hdr == (20, NLMSG_DONE, NLM_F_MULTI, 11, 1)
    assert done[16:20] == b"\0\0\0\0"
    assert not client.conn.dumping


def test_dump_produces_one_record_at_a_time(device: Device) -> None:
    """A dump of a million entries costs one record: nothing is produced ahead of the reader."""
    client = SansClient(device)
    client.send(family_request(device, CMD_COUNT, {"count": 1_000_000}, flags=DUMP, seq=1))
    assert client.conn.queued_replies == 0 and client.conn.dumping
    for _ in range(3):
        record = client.pop()
        assert record is not None and len(record) <= 40 << 10
        assert client.conn.queued_replies == 0
    client.close()
    assert not client.conn.dumping and client.pop() is None


def test_second_dump_is_ebusy_and_other_requests_go_first() -> None:
    device = make_device(dump_record_bytes=512)[0]
    client = SansClient(device)
    client.send(family_request(device, CMD_COUNT, {"count": 300}, flags=DUMP, seq=1))
    first = client.pop()
    assert first is not None
    seen = len(split_record(first))
    client.send(
        family_request(device, CMD_COUNT, {"count": 5}, flags=DUMP, seq=2),
        nlctrl_request(flags=DUMP, seq=3),
        family_request(device, CMD_ECHO, {"id": 4}, seq=4),
    )
    out = [m for r in client.records() for m in client.decode(r)]
    assert error_code(out[0]) == errno.EBUSY and out[0].seq == 2
    assert error_code(out[1]) == errno.EBUSY and out[1].seq == 3
    assert isinstance(out[2], GenlMessage) and out[2].seq == 4
    rest = out[3:]
    assert all(m.seq == 1 for m in rest)
    assert seen + len(rest) - 1 == 300 and isinstance(rest[-1], DoneMessage)
    # once it ended, a new dump may start
    out = client.transact(family_request(device, CMD_COUNT, {"count": 2}, flags=DUMP, seq=5))
    assert [type(m) for m in out] == [GenlMessage, GenlMessage, DoneMessage]


def test_entries_present_for_the_whole_dump_appear_exactly_once() -> None:
    device = make_device(dump_record_bytes=200)[0]
    reader, writer = SansClient(device), SansClient(device)
    ids = new_objects(writer, [f"o{i}" for i in range(300)])
    to_delete = ids[::3]
    stable = {f"o{i}" for i in range(300)} - {f"o{i}" for i in to_delete}
    reader.send(family_request(device, CMD_GET, flags=DUMP, seq=1))
    seen: list[tuple[int, str]] = []
    done = False
    step = 0
    while not done:
        record = reader.pop()
        assert record is not None
        for msg in reader.decode(record):
            if isinstance(msg, DoneMessage):
                done = True
            else:
                assert isinstance(msg, GenlMessage)
                seen.append((msg.attrs["id"], msg.attrs["name"]))
        # between two records: delete some (behind and ahead of the cursor), add some
        for _ in range(3):
            if to_delete:
                victim = to_delete.pop(len(to_delete) // 2 if step % 2 else -1)
                writer.transact(family_request(device, CMD_DEL, {"id": victim}))
        new_objects(writer, [f"n{step}a", f"n{step}b"])
        step += 1
    assert step > 10  # the table really changed while the dump ran
    names = [name for _id, name in seen]
    assert sorted(n for n in names if n in stable) == sorted(stable)  # each exactly once
    assert len(set(seen)) == len(seen)  # nothing twice, added or not
    assert any(n.startswith("n") for n in names)  # some added ones showed up (ahead of it)


def _error_family(device: Device) -> Family:
    """A family whose dumps fail before starting (ENODEV) or halfway (EIO)."""

    def refuse(request: Request) -> Iterator[GenlMessage]:
        raise NetlinkError(errno.ENODEV, "no such datapath")

    def halfway(request: Request) -> Iterator[GenlMessage]:
        for i in range(3):
            yield request.reply(2, {"id": i})
        raise NetlinkError(errno.EIO, "the table went away")

    family = Family(
        "pd_errors",
        1,
        4,
        "ovsdp_test",
        {
            1: Command(1, "REFUSE", dump=refuse),
            2: Command(2, "HALFWAY", dump=halfway),
        },
    )
    return device.register(family)


def test_dump_errors_before_and_during_the_dump(device: Device) -> None:
    family = _error_family(device)
    client = SansClient(device)
    client.codecs[family.id] = TEST_CODEC
    client.transact(control_request(device, C_SOCK_PROP, {"txn_markers": 1}))
    out = client.transact(encode(TEST_CODEC, family.id, 1, flags=DUMP, seq=7))
    err = expect_error(out[:1], errno.ENODEV)
    assert err.reason == "no such datapath"
    assert is_marker(out[1], 7, client.pid) and len(out) == 2  # nothing else follows
    assert not client.conn.dumping
    out = client.transact(encode(TEST_CODEC, family.id, 2, flags=DUMP, seq=8))
    assert [type(m) for m in out] == [GenlMessage] * 3 + [DoneMessage, NoopMessage]
    done = out[3]
    assert isinstance(done, DoneMessage)
    assert done.error == -errno.EIO and done.reason == "the table went away"
    assert done.flags & NLM_F_ACK_TLVS
    assert not client.conn.dumping


# -- unsolicited messages (section 9) -------------------------------------------------------


def test_unsolicited_messages_each_their_own_record(device: Device) -> None:
    sender, member, other = SansClient(device), SansClient(device), SansClient(device)
    group = device.group_id(TEST_FAMILY, TEST_GROUP)
    member.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}))
    sender.transact(family_request(device, CMD_SEND, {"count": 3, "payload": b"ev"}))
    records = member.records()
    assert len(records) == 3
    for i, record in enumerate(records):
        ((hdr, _),) = split_record(record)
        assert hdr[3] == 0  # seq 0
        (msg,) = member.decode(record)
        assert isinstance(msg, GenlMessage) and msg.attrs == {"id": i, "payload": b"ev"}
    assert other.records() == [] and sender.records() == []
    # unicast
    sender.transact(family_request(device, CMD_SEND, {"count": 2, "pid": other.pid}))
    assert len(other.records()) == 2 and member.records() == []
    # after leaving, no more group messages
    member.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 0}))
    sender.transact(family_request(device, CMD_SEND, {"count": 2}))
    assert member.records() == []


def _fill(sender: SansClient, target: SansClient, count: int, payload: bytes = b"x" * 60) -> None:
    sender.transact(
        family_request(
            sender.device, CMD_SEND, {"count": count, "pid": target.pid, "payload": payload}
        )
    )


def test_queue_overflow_drops_counts_and_reports_enobufs_once(device: Device) -> None:
    sender, slow, fast = SansClient(device), SansClient(device), SansClient(device)
    slow.transact(control_request(device, C_SOCK_PROP, {"rxq_limit": 4096}))
    _fill(sender, slow, 200)
    _fill(sender, fast, 200)
    slow.send(control_request(device, C_SOCK_PROP, seq=1))  # answered after what is queued
    _fill(sender, slow, 100)  # more overflow before the client read: no second ENOBUFS
    records = slow.records()
    size = len(records[0])
    fits = 4096 // size
    messages = [m for r in records for m in slow.decode(r)]
    assert len(records) == len(messages) == fits + 2
    upcalls, (overrun, props) = messages[:fits], messages[fits:]
    assert all(isinstance(m, GenlMessage) and m.cmd == CMD_SEND for m in upcalls)
    assert [m.attrs["id"] for m in upcalls] == list(range(fits))  # type: ignore[union-attr]
    assert isinstance(overrun, ErrorMessage) and overrun.error == -errno.ENOBUFS
    assert overrun.seq == 0 and overrun.pid == slow.pid
    assert overrun.request == (16, 0, 0, 0, slow.pid)
    assert isinstance(props, GenlMessage)
    assert props.attrs["rxq_bytes"] == fits * size
    assert props.attrs["rxq_dropped"] == 200 - fits
    (props,) = slow.transact(control_request(device, C_SOCK_PROP, seq=2))
    assert isinstance(props, GenlMessage)
    assert props.attrs["rxq_dropped"] == 300 - fits and props.attrs["rxq_bytes"] == 0
    # read: the next overflow gets a new ENOBUFS
    _fill(sender, slow, 100)
    messages = [m for r in slow.records() for m in slow.decode(r)]
    assert len(messages) == fits + 1 and error_code(messages[-1]) == errno.ENOBUFS
    # the other connection got everything
    assert len(fast.records()) == 200 and fast.conn.rxq_dropped == 0


def test_replies_are_never_dropped_nor_counted(device: Device) -> None:
    sender, slow = SansClient(device), SansClient(device)
    slow.transact(control_request(device, C_SOCK_PROP, {"rxq_limit": 4096}))
    _fill(sender, slow, 100)
    held = slow.conn.rxq_bytes
    for i in range(50):
        slow.send(family_request(device, CMD_ECHO, {"id": i, "payload": b"r" * 1000}, seq=100 + i))
    assert slow.conn.rxq_bytes == held
    messages = [m for r in slow.records() for m in slow.decode(r)]
    echoes = [m for m in messages if isinstance(m, GenlMessage) and m.cmd == CMD_ECHO]
    assert [m.seq for m in echoes] == list(range(100, 150))


def test_multicast_overflow_hurts_only_the_slow_member(device: Device) -> None:
    sender = SansClient(device)
    group = device.group_id(TEST_FAMILY, TEST_GROUP)
    members = [SansClient(device) for _ in range(3)]
    for m in members:
        m.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}))
    members[0].transact(control_request(device, C_SOCK_PROP, {"rxq_limit": 4096}))
    sender.transact(family_request(device, CMD_SEND, {"count": 500, "payload": b"e" * 20}))
    assert members[0].conn.rxq_dropped > 0
    for m in members[1:]:
        assert len(m.records()) == 500 and m.conn.rxq_dropped == 0


# -- disconnecting (section 10) -------------------------------------------------------------


def test_disconnect_releases_everything(device: Device) -> None:
    sender = SansClient(device)
    group = device.group_id(TEST_FAMILY, TEST_GROUP)
    leaving = SansClient(device)
    leaving.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}))
    leaving.transact(control_request(device, C_MC_SUBSCRIBE, {"mcast_grp": 0x10, "mcast_join": 1}))
    leaving.transact(control_request(device, C_SET_PID, {"sock_pid": 500}))
    sender.transact(family_request(device, CMD_SEND, {"count": 10}))
    leaving.send(family_request(device, CMD_COUNT, {"count": 1_000_000}, flags=DUMP))
    leaving.pop()
    for i in range(20):
        leaving.send(family_request(device, CMD_ECHO, {"id": i}))
    conn = leaving.conn
    assert conn.dumping and conn.queued_replies > 0 and conn.rxq_bytes > 0
    leaving.close()
    assert 500 not in device.connections and conn not in device.connections.values()
    assert all(conn not in members for members in device.groups.values())
    assert not conn.groups and not conn.dumping and conn.rxq_bytes == 0
    assert conn.queued_replies == 0 and conn.pop_output() is None
    # later messages for it go nowhere and do not fail the sender
    out = sender.transact(family_request(device, CMD_SEND, {"count": 3}, flags=ACK))
    assert [error_code(m) for m in out] == [0]
    assert device.unicast(500, b"\0" * 16) is False
    # its PID can be claimed again
    claimer = SansClient(device)
    claimer.transact(control_request(device, C_SET_PID, {"sock_pid": 500}))
    assert claimer.pid == 500


# -- fuzzing --------------------------------------------------------------------------------


def _message_strategy(fid: int) -> st.SearchStrategy[bytes]:
    attrs = st.lists(st.builds(nla, st.integers(0, 12), st.binary(max_size=24)), max_size=4).map(
        b"".join
    )
    message = st.builds(
        lambda mtype, flags, seq, cmd, attrs, fam_hdr: genl(
            mtype, cmd, attrs, flags=flags, seq=seq, fam_hdr=fam_hdr
        ),
        st.sampled_from([0, 1, 2, 3, 0x10, 0x11, fid, 0x7777]),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 12),
        attrs,
        st.sampled_from([b"", b"\0" * 4]),
    )
    return st.one_of(st.binary(max_size=64), message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_record_gets_well_formed_answers_and_the_connection_goes_on(
    data: st.DataObject,
) -> None:
    device = make_device()[0]
    client = SansClient(device, NOBODY)  # unprivileged: SEND loops cannot be triggered
    fid = tid(device)
    record = b"".join(data.draw(st.lists(_message_strategy(fid), max_size=5)))
    device.handle_record(client.conn, record)
    produced = 0
    while produced < 200 and (out := client.pop()) is not None:
        for hdr, _ in split_record(out):  # everything the service sends is well framed
            assert hdr[4] == client.pid
        produced += 1
    # the connection goes on (its answer comes before what is left of a dump, if one started)
    client.send(family_request(device, CMD_ECHO, {"id": 5}, seq=0xABC))
    out = client.pop()
    assert out is not None
    (echo,) = client.decode(out)
    assert isinstance(echo, GenlMessage) and echo.seq == 0xABC and echo.attrs == {"id": 5}


def test_enobufs_rearms_only_once_the_client_has_read_it() -> None:
    """docs/pseudodev.md §9: one ENOBUFS per overrun; the next only after the client read it."""
    device, _test = make_device(rxq_limit=4096)
    conn = device.connect(Credentials())
    unread = [0]
    conn.peer_unread = lambda: unread[0]
    record = b"x" * 3000

    def overruns_queued() -> int:
        out = []
        while (rec := conn.pop_output()) is not None:
            out.append(rec)
        return sum(1 for rec in out if rec[4:6] == b"\x02\x00")  # NLMSG_ERROR

    assert conn.queue_unsolicited(record) and not conn.queue_unsolicited(record)
    unread[0] = 1234  # the ENOBUFS (and more) went out and sit unread in the socket
    assert overruns_queued() == 1
    assert not conn.queue_unsolicited(record * 2)  # another drop while it is unread
    assert overruns_queued() == 0
    unread[0] = 0  # the client read everything, the ENOBUFS included
    assert not conn.queue_unsolicited(record * 2)
    assert overruns_queued() == 1
    assert conn.rxq_dropped == 3


def test_a_handler_bug_answers_eio_and_the_device_carries_on() -> None:
    """An exception other than NetlinkError in a handler (an ovsdp bug) answers that request
    with EIO, or ends that dump with EIO; nothing else notices."""
    from ovsdp.netlink.constants import NLM_F_DUMP, NLM_F_REQUEST
    from ovsdp.netlink.message import (
        DoneMessage,
        ErrorMessage,
        GenlMessage,
        decode_record,
        encode_genl as encode,
    )
    from ovsdp.pseudodev.registry import Command, Family

    def broken(request: object) -> list[GenlMessage]:
        raise ZeroDivisionError("oops")

    def broken_dump(request: object) -> Iterator[GenlMessage]:
        yield from ()
        raise KeyError("cursor")

    device, _test = make_device()
    family = device.register(
        Family(
            "ovsdp_broken",
            1,
            4,
            "ovsdp_test",
            {1: Command(1, "DO", do=broken), 2: Command(2, "DUMP", dump=broken_dump)},
        )
    )
    conn = device.connect(Credentials())
    families = {family.id: family.genl}
    device.handle_record(
        conn, encode(GenlMessage(family.id, NLM_F_REQUEST, 5, 0, 1, 1, 0, {}), family.genl)
    )
    (error,) = decode_record(conn.pop_output() or b"", families)
    assert isinstance(error, ErrorMessage) and error.error == -errno.EIO and error.seq == 5
    assert error.reason is not None and "ZeroDivisionError" in error.reason
    device.handle_record(
        conn,
        encode(GenlMessage(family.id, NLM_F_REQUEST | NLM_F_DUMP, 6, 0, 2, 1, 0, {}), family.genl),
    )
    (done,) = decode_record(conn.pop_output() or b"", families)
    assert isinstance(done, DoneMessage) and done.error == -errno.EIO and done.seq == 6
    assert conn.pop_output() is None and not conn.dumping

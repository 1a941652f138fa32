import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkv.core import messages as m
from zkv.core.cluster_map import ClusterMap, MapMember
from zkv.model.record import Record
from zkv.model.versions import Version

REC = Record(Version(1, 2, "n1"), False, b"value")
MAP = ClusterMap.founding(MapMember("n1", "tcp://127.0.0.1:1", 5), 3, 64).encode()
SAMPLES = [
    m.ClientRequest(1, "put", b"k", b"v", "quorum", 2000),
    m.ClientRequest(2, "get", b"k", None, "one", 0),
    m.ClientReply(1, "ok", b"v", ""),
    m.RingQuery(3),
    m.RingInfo(3, [("n1", "tcp://127.0.0.1:1")], 3, 64, 2, False),
    m.ReadRequest(4, b"k"),
    m.ClientRequest(3, "cas", b"k", None, "quorum", 100, b"old"),
    m.ReadReply(4, b"k", REC, None),
    m.ReadReply(4, b"k", None, Version(9, 0, "n3")),
    m.WriteRequest(5, b"k", Record.tomb(Version(3, 0, "n2"))),
    m.WriteReply(5, b"k", True, None),
    m.WriteReply(5, b"k", False, Version(4, 1, "n1")),
    m.Prepare(8, b"k", Version(5, 0, "n1")),
    m.PrepareReply(8, b"k", True, REC, None),
    m.PrepareReply(8, b"k", False, None, Version(6, 0, "n2")),
    m.Handoff(6, [(b"k", REC)]),
    m.HandoffAck(6),
    m.SyncDigest(7, 1700000000000, [(123, b"\x00" * 8)]),
    m.SyncKeys(7, 1700000000000, 123, [(b"k", Version(1, 2, "n1"))]),
    m.SyncPull(7, [b"k"]),
    m.Gossip("n1", [m.MemberState("n1", "tcp://127.0.0.1:1", 1, 9, "alive")]),
    m.JoinRequest(m.MemberState("n2", "tcp://127.0.0.1:4", 2, 0, "alive")),
    m.ErrorReply(-1, "bad"),
    m.ReadRequest(4, b"k", 7),
    m.EpochRefused(4, b"k", 9, MAP),
    m.EpochRefused(4, b"k", 9, None),
    m.Gossip("n1", [], 3, 2),
    m.JoinRequest(m.MemberState("n2", "tcp://127.0.0.1:4", 2, 0, "alive"), 77),
    m.MapPrepare(2, [1, "n1"], MAP),
    m.MapPromise(2, [1, "n1"], True, [0, ""], None, 1),
    m.MapPromise(2, [1, "n1"], False, [3, "n2"], MAP, 1),
    m.MapAccept(2, [1, "n1"], MAP),
    m.MapAccepted(2, [1, "n1"], True, 1),
    m.MapLearn(MAP),
    m.MapQuery(1),
    m.StreamPull(1, 2, 0, 1 << 63),
    m.StreamChunk(1, [(b"k", REC)], 55),
    m.StreamChunk(1, [], None),
    m.AdminRequest(1, "decommission", "n2"),
    m.AdminReply(1, "refused", "why", {"epoch": 3}),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda x: type(x).__name__)
def test_every_message_round_trips(message):
    assert m.decode(m.encode(message)) == message


@pytest.mark.parametrize("frame,reason", [
    (b"", "not CBOR"),
    (b"\xff\xff", "not CBOR"),
    (cbor2.dumps({"a": 1}), "non-empty CBOR array"),
    (cbor2.dumps([]), "non-empty CBOR array"),
    (cbor2.dumps([999]), "unknown message kind"),
    (cbor2.dumps(["1"]), "unknown message kind"),
    (cbor2.dumps([1, 1, "put", b"k"]), "needs 7 fields"),
    (cbor2.dumps([1, 1, "explode", b"k", None, "quorum", 0, None]), "op must be one of"),
    (cbor2.dumps([1, 1, "put", "str-key", b"v", "quorum", 0, None]), "key must be bytes"),
    (cbor2.dumps([1, -1, "put", b"k", b"v", "quorum", 0, None]), "must not be negative"),
    (cbor2.dumps([1, 1, "put", b"k", b"v", "strong", 0, None]), "consistency must be one of"),
    (cbor2.dumps([12, 1, b"k", [1, 2, "n", True, b"x"], 1]), "tombstone carries no value"),
    (cbor2.dumps([12, 1, b"k", [1, 2], 1]), "record must be a list of 5"),
    (cbor2.dumps([30, "n1", [["n1", "a", 1, 1, "zombie"]], 1, 0, 0]), "must be one of 'alive'"),
    (cbor2.dumps([10, True, b"k", 1]), "must be an integer"),
    (cbor2.dumps([10, 1 << 70, b"k", 1]), "out of range"),
])
def test_malformed_frames_are_rejected_with_a_reason(frame, reason):
    with pytest.raises(m.DecodeError, match=reason):
        m.decode(frame)


def test_oversized_frame_is_rejected_before_parsing():
    with pytest.raises(m.DecodeError, match="exceeds"):
        m.decode(b"\x00" * (m.MAX_FRAME + 1))


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(frame):
    try:
        m.decode(frame)
    except m.DecodeError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=8)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=6), max_leaves=30))
def test_random_cbor_structures_never_raise_anything_but_decode_error(body):
    for kind in (1, 12, 20, 30):
        try:
            m.decode(cbor2.dumps([kind, *body] if isinstance(body, list) else [kind, body]))
        except m.DecodeError:
            pass


# --------------------------------------------------------------------------- batches


def test_a_joined_batch_decodes_to_its_messages_in_order():
    frames = [m.encode(message) for message in SAMPLES]
    assert m.decode_batch(m.join(frames), len(SAMPLES)) == SAMPLES
    many = [m.encode(m.HandoffAck(i)) for i in range(300)]  # a two-byte array header
    assert m.decode_batch(m.join(many), 300) == [m.HandoffAck(i) for i in range(300)]


def test_a_single_message_is_its_own_batch_and_decode_refuses_a_batch():
    frame = m.encode(SAMPLES[0])
    assert m.join([frame]) == frame
    assert m.decode_batch(frame, 1) == [SAMPLES[0]]
    with pytest.raises(m.DecodeError, match="a batch where one message belongs"):
        m.decode(m.join([frame, frame]))


def test_a_bad_message_in_a_batch_spoils_only_itself():
    good = m.encode(m.HandoffAck(7))
    got = m.decode_batch(m.join([good, cbor2.dumps([999]), cbor2.dumps(5),
                                 m.join([good, good]), good]), 10)
    assert got[0] == got[4] == m.HandoffAck(7)
    assert [str(e) for e in got[1:4]] == [
        "unknown message kind 999", "a batch's message must be a non-empty CBOR array",
        "a batch inside a batch"]


@pytest.mark.parametrize("body,reason", [
    ([0], "1 to 3 messages, not 0"),
    ([0, *[[11, 1]] * 4], "1 to 3 messages, not 4"),
])
def test_an_empty_or_oversized_batch_is_refused_whole(body, reason):
    with pytest.raises(m.DecodeError, match=reason):
        m.decode_batch(cbor2.dumps(body), 3)


def test_false_is_not_the_batch_kind():
    with pytest.raises(m.DecodeError, match="unknown message kind False"):
        m.decode_batch(cbor2.dumps([False, 1]), 3)


def test_frames_are_grouped_by_count_and_size_in_order():
    frames = [b"a" * n for n in (3, 3, 3, 10, 1, 1, 1)]
    groups = list(m.in_batches(frames, 3, 8))
    assert groups == [[b"aaa", b"aaa"], [b"aaa"], [b"a" * 10], [b"a", b"a", b"a"]]
    assert [f for g in groups for f in g] == frames

"""The Kafka backend's local copy (monitor.kstate): a restart uses it instead of the
changelog only when the group's committed offsets are its offsets *and* name the checkpoint
that wrote it. Equal offsets alone are not enough: a partition that moved to another
process and back can have a newer snapshot at the same offsets (a progress-only panes
record raised its seq), and restoring the older copy would reuse seq numbers that stage 2
then skips as merged."""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from monitor.kstate import KafkaState
from monitor.state import StateStore


def _state(tmp_path, committed: dict[TopicPartition, OffsetAndMetadata]) -> KafkaState:
    store = StateStore(tmp_path)
    store.checkpoint({("preds", 3): 100, ("labels", 3): 90},
                     {"kpartition/3": b"state", "kseq/3": b"\x81\xa1m\x05", "kckpt/3": b"ckpt-a"})
    consumer = SimpleNamespace(committed=lambda tp, metadata=False: committed.get(tp))
    ks = object.__new__(KafkaState)
    ks.app = SimpleNamespace(store=store, consumer=consumer)
    return ks


TPS = [TopicPartition("preds", 3), TopicPartition("labels", 3)]


def test_the_local_copy_is_used_when_the_committed_offsets_name_its_checkpoint(tmp_path):
    ks = _state(tmp_path, {TPS[0]: OffsetAndMetadata(100, "ckpt-a", -1), TPS[1]: OffsetAndMetadata(90, "ckpt-a", -1)})
    data, offsets, seqs, ckpt, source = ks._local_snapshot(3, TPS)
    assert (data, offsets, seqs, ckpt, source) == (b"state", {"preds": 100, "labels": 90}, {"m": 5}, "ckpt-a",
                                                     "the local copy")


def test_same_offsets_committed_by_another_checkpoint_send_the_restore_to_the_changelog(tmp_path):
    ks = _state(tmp_path, {TPS[0]: OffsetAndMetadata(100, "ckpt-c", -1), TPS[1]: OffsetAndMetadata(90, "ckpt-c", -1)})
    assert ks._local_snapshot(3, TPS) is None


def test_other_offsets_or_none_committed_send_the_restore_to_the_changelog(tmp_path):
    moved = _state(tmp_path / "a", {TPS[0]: OffsetAndMetadata(120, "ckpt-a", -1),
                                    TPS[1]: OffsetAndMetadata(90, "ckpt-a", -1)})
    assert moved._local_snapshot(3, TPS) is None
    assert _state(tmp_path / "b", {})._local_snapshot(3, TPS) is None

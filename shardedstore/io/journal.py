"""The append journal of shard files: how a torn append is found and cut off.

A shard on local files may grow: new chunk bytes and a new index are appended to its
end, under the shard's lock (:meth:`~shardedstore.io.local.LocalFileIO.append`). Before
the first byte is appended, the writer writes a *journal*, one small file per shard
under ``<root>/.shardedstore-locks/`` (named by the SHA-1 of the shard's path, like its
lock file, so it is never listed, read as data or copied), and fsyncs it and its folder:
it names the shard file (device and inode), its length and index checksum before the
append (the *old* version) and after it (the *new* one), and ends with its own CRC32C.
Once the appended bytes are fsynced, the journal is removed.

A writer killed (or a machine that loses power) mid-append leaves a torn tail: the last
bytes of the file are no index. Then:

- every reader whose index fails its checksum reads the journal: if it names this file
  and the old index still checks at the old length, the reader uses the old version
  (its chunks all lie before the old length); with no journal, it reads the tail once
  more (an append may just have completed and removed its journal) before reporting
  corruption. A reader racing a live append therefore sees the old or the new version.
- the next writer of the shard, holding its lock, calls :func:`recover` first: a
  complete append (length and index checksum of the new version) is kept, a torn one is
  truncated back to the old length; the journal is then removed.

A journal that names another file (the shard was since replaced by rename) or whose
checksums do not match is stale and ignored. Nothing here is ever applied to bytes
that a complete index references.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Final

from shardedstore.format.shard import CHECKSUM_NBYTES, crc32c
from shardedstore.locks import LOCK_DIR

__all__ = [
    "Journal",
    "begin_append",
    "end_append",
    "journal_path",
    "read_journal",
    "recover",
    "stable_length",
    "torn_length",
]

_MAGIC: Final = b"SSAJ"
_RECORD: Final = struct.Struct("<4sQQQ4sQ4s")  # magic, dev, ino, old len+crc, new len+crc
_JOURNAL_NBYTES: Final = _RECORD.size + CHECKSUM_NBYTES


@dataclass(frozen=True)
class Journal:
    """What a writer recorded before appending to one shard file."""

    device: int
    inode: int
    old_length: int
    old_crc: bytes  # the last 4 bytes of the old version (its index checksum)
    new_length: int
    new_crc: bytes

    def to_bytes(self) -> bytes:
        body = _RECORD.pack(
            _MAGIC,
            self.device,
            self.inode,
            self.old_length,
            self.old_crc,
            self.new_length,
            self.new_crc,
        )
        return body + crc32c(body).to_bytes(CHECKSUM_NBYTES, "little")

    @classmethod
    def from_bytes(cls, data: bytes) -> Journal | None:
        """Decode a journal; ``None`` if it is torn or not one."""
        if len(data) != _JOURNAL_NBYTES:
            return None
        body = data[: _RECORD.size]
        if crc32c(body) != int.from_bytes(data[_RECORD.size :], "little"):
            return None
        magic, dev, ino, old_len, old_crc, new_len, new_crc = _RECORD.unpack(body)
        if magic != _MAGIC:
            return None
        return cls(dev, ino, old_len, old_crc, new_len, new_crc)

    def names(self, st: os.stat_result) -> bool:
        """Tell whether the journal is about the file of ``st``."""
        return (st.st_dev, st.st_ino) == (self.device, self.inode)


def journal_path(root: str, path: str) -> str:
    """Return the journal file of the shard file ``path`` of the store at ``root``."""
    rel = os.path.relpath(path, root)
    digest = hashlib.sha1(rel.encode("utf-8")).hexdigest()
    return os.path.join(root, LOCK_DIR, f"{digest}.journal")


def read_journal(path: str) -> Journal | None:
    """Return the journal at ``path``, or ``None`` if there is none (or it is torn)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_JOURNAL_NBYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Journal.from_bytes(data)


def begin_append(path: str, journal: Journal, *, durable: bool) -> None:
    """Write ``journal`` to ``path`` before an append; fsync it and its folder if ``durable``."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, journal.to_bytes())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    if durable:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def end_append(path: str) -> None:
    """Remove the journal at ``path`` once its append is on disk (a stale one is harmless)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _tail(fd: int, length: int) -> bytes:
    return os.pread(fd, CHECKSUM_NBYTES, length - CHECKSUM_NBYTES) if length >= 4 else b""


def torn_length(fd: int, journal: Journal | None) -> int | None:
    """Return the old length if ``fd`` holds a torn append that ``journal`` describes.

    ``None``: no journal, a stale one (another file, or the old index is not where it
    says), or the append it describes is complete.
    """
    if journal is None:
        return None
    st = os.fstat(fd)
    if not journal.names(st):
        return None
    size = st.st_size
    if size == journal.new_length and _tail(fd, size) == journal.new_crc:
        return None
    if size < journal.old_length or _tail(fd, journal.old_length) != journal.old_crc:
        return None
    return journal.old_length


def recover(path: str, journal_file: str, *, durable: bool) -> None:
    """Cut a torn append off the shard file ``path`` (its writer holds the shard's lock).

    A complete append is kept; the journal is removed in every case.
    """
    try:
        with open(journal_file, "rb") as f:
            journal = Journal.from_bytes(f.read(_JOURNAL_NBYTES + 1))
    except (FileNotFoundError, NotADirectoryError):
        return  # the common case: no append was interrupted
    if journal is None:
        end_append(journal_file)  # torn: the append it would describe never started
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        end_append(journal_file)
        return
    try:
        old = torn_length(fd, journal)
        if old is not None:
            os.ftruncate(fd, old)
            if durable:
                os.fsync(fd)
    finally:
        os.close(fd)
    end_append(journal_file)


def stable_length(fd: int, journal_file: str) -> int | None:
    """Return the length of the last complete version of the open shard ``fd``, if torn.

    ``None`` when the journal names no torn append of this file (the caller then
    trusts the file's size, or reads it again).
    """
    return torn_length(fd, read_journal(journal_file))

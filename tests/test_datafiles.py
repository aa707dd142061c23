"""Reading what wrote a Redis data dir (RDB version and writer) from file headers."""

from __future__ import annotations

from pathlib import Path

from toolkit.redis import datafiles

# The first bytes of an AOF base file valkey 8.1.8 wrote (taken from a real one).
VALKEY_BASE = bytes.fromhex(
    "5245444953303031 31fa0a76616c6b65792d76657205382e312e38fa0a72656469732d62697473c040"
    "fa056374696d65c275a50c6bfa08757365642d6d656dc208841000fa08616f662d62617365c001fe00"
)


def test_header_of_a_valkey_base_file() -> None:
    version, aux = datafiles.parse_header(VALKEY_BASE) or (0, {})
    assert version == 11
    assert aux["valkey-ver"] == "8.1.8" and aux["redis-bits"] == "64" and aux["aof-base"] == "1"


def test_data_dir_reports_the_newest_format(tmp_path: Path) -> None:
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "appendonly.aof.3.base.rdb").write_bytes(VALKEY_BASE)
    old = b"REDIS0010\xfa\x09redis-ver\x067.0.15\xff"
    (tmp_path / "dump.rdb").write_bytes(old)
    found = datafiles.data_format(tmp_path)
    assert found is not None
    assert found.describe() == "RDB format 11, written by valkey 8.1.8 (appendonly.aof.3.base.rdb)"
    assert datafiles.read(tmp_path / "dump.rdb") == datafiles.DataFormat(
        tmp_path / "dump.rdb", 10, "redis 7.0.15"
    )


def test_not_rdb_and_empty_dirs(tmp_path: Path) -> None:
    (tmp_path / "dump.rdb").write_bytes(b"*2\r\n$6\r\nSELECT\r\n")  # an AOF, not an RDB
    assert datafiles.data_format(tmp_path) is None
    assert datafiles.data_format(tmp_path / "missing") is None
    assert datafiles.unreadable_version("# Can't handle RDB format version 12") == 12
    assert datafiles.unreadable_version("# Bad directive") is None

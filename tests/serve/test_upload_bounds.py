"""Uploads whose metadata is hostile: what reading them costs is bounded, and
malformed input is a 4xx with a message in the upload's own terms, never a 500."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import shutil
import struct
import tarfile
import tracemalloc
import zipfile

import pytest
from _serve_helpers import AUTH, TOKEN, files_under, zip_dir

LIMITS = dict(max_uncompressed_bytes=1000, max_members=10, max_depth=8, max_image_side=4096)
BIG = 2 << 20  # what a header claims; reading it whole would allocate as much


def _refused_with_peak(call):
    """``(UploadRejected, peak bytes traced)`` of ``call()``, which must refuse."""
    from serve.uploads import UploadRejected

    tracemalloc.start()
    try:
        with pytest.raises(UploadRejected) as caught:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught.value, peak


def _unpack(tmp_path, body: bytes, **limits):
    from serve.uploads import Limits, unpack

    archive = tmp_path / "body"
    archive.write_bytes(body)
    dest = tmp_path / "out"
    dest.mkdir()
    return lambda: unpack(archive, dest, Limits(**{**LIMITS, **limits}))


def _client(make_service):
    from fastapi.testclient import TestClient

    from serve.app import create_app

    service, _ = make_service()
    app = create_app(service, TOKEN, max_upload_bytes=service.cfg.max_upload_bytes)
    return TestClient(app, raise_server_exceptions=False), service


def _assert_nothing_written(service):
    assert files_under(service.store.root / "datasets") == []
    assert files_under(service.store.root / "tmp") == []
    assert service.datasets() == []


# --- tar headers ----------------------------------------------------------------


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _file(name: str = "f", data: bytes = b"x") -> bytes:
    return _header(name, tarfile.REGTYPE, len(data)) + _padded(data)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n"
    length = len(body)
    while length != len(str(length)) + len(body):
        length = len(str(length)) + len(body)
    return f"{length}{body}".encode()


def _gnu_sparse() -> bytes:
    """A GNU sparse member whose map goes on for BIG bytes of extension blocks."""
    header = bytearray(_header("s", tarfile.GNUTYPE_SPARSE, 0))
    header[482] = 1  # isextended
    header[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(header))[0]
    entries = b"%011o\0%011o\0" % (1, 1) * 21
    more, last = entries + b"\1" + b"\0" * 7, entries + b"\0" * 8
    return bytes(header) + more * (BIG // 512) + last


def _pax_sparse_10() -> bytes:
    """A pax GNU sparse 1.0 member whose map (in its data) lists a million pairs."""
    records = _pax_record("GNU.sparse.major", "1") + _pax_record("GNU.sparse.minor", "0")
    data = b"1000000\n" + b"1\n" * (BIG // 2)
    return (
        _header("././@PaxHeader", tarfile.XHDTYPE, len(records))
        + _padded(records)
        + _header("f", tarfile.REGTYPE, len(data))
        + _padded(data)
    )


def _headers_cases():
    end = b"\0" * 1024
    zeros = b"x" + b"\0" * (BIG - 1)
    long_name = _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, BIG) + zeros
    long_link = _header("././@LongLink", tarfile.GNUTYPE_LONGLINK, BIG) + zeros
    pax = _header("././@PaxHeader", tarfile.XHDTYPE, BIG) + zeros
    pax_global = _header("././@PaxHeader", tarfile.XGLTYPE, BIG) + zeros
    chain = (_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 1) + _padded(b"x")) * 1000
    record = _pax_record("comment", "c" * (60 << 10))  # under the per-member cap, each
    many = b"".join(
        _header("././@PaxHeader", tarfile.XHDTYPE, len(record)) + _padded(record) + _file(f"f{i}")
        for i in range(10)
    )
    return [
        ("gnu-long-name", long_name + _file() + end, 422),
        ("gnu-long-link", long_link + _file() + end, 422),
        ("pax", pax + _file() + end, 422),
        ("pax-global", pax_global + _file() + end, 422),
        ("header-chain", chain + _file() + end, 422),
        ("gnu-sparse", _gnu_sparse() + end, 422),
        ("pax-sparse-1.0", _pax_sparse_10() + end, 422),
        ("headers-past-the-byte-cap", many + end, 413),
    ]


@pytest.mark.parametrize(
    "case, body, status", _headers_cases(), ids=[c[0] for c in _headers_cases()]
)
def test_tar_headers_are_bounded_before_tarfile_holds_them(tmp_path, case, body, status):
    compressed = gzip.compress(body, compresslevel=9)
    assert len(compressed) < 100_000 < BIG
    refused, peak = _refused_with_peak(_unpack(tmp_path, compressed))
    assert peak < BIG // 2, f"{case}: {peak} bytes allocated to refuse it"
    assert refused.status == status, (case, refused.message)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= LIMITS["max_uncompressed_bytes"]


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_every_tar_compression_still_unpacks(tmp_path, episodes, mode):
    from serve.uploads import Limits, check_episodes, unpack

    archive = tmp_path / "body"
    with tarfile.open(archive, mode, format=tarfile.PAX_FORMAT) as tar:
        tar.add(episodes, arcname="run")
    dest = tmp_path / "out"
    dest.mkdir()
    written = unpack(archive, dest, Limits(1 << 20, 100, 8, 4096))
    assert written == sum(p.stat().st_size for p in episodes.rglob("*") if p.is_file())
    assert len(check_episodes(dest)) == 3


@pytest.mark.parametrize("size", ["-5", "abc", "1e3", "+3", " 5", "-0"])
def test_a_pax_size_that_is_not_a_decimal_count_is_422(tmp_path, size):
    """tarfile reads a pax size of -5 as -5 and one it cannot parse as 0: the
    member became an empty file and its data the next header."""
    record = _pax_record("size", size)
    body = (
        _header("././@PaxHeader", tarfile.XHDTYPE, len(record))
        + _padded(record)
        + _file("ep/f", b"hello")
        + b"\0" * 1024
    )
    refused, _ = _refused_with_peak(_unpack(tmp_path, body))
    assert refused.status == 422
    assert "invalid pax size" in refused.message and repr(size) in refused.message
    assert files_under(tmp_path / "out") == []


def test_a_decimal_pax_size_still_unpacks(tmp_path):
    record = _pax_record("size", "5")
    body = (
        _header("././@PaxHeader", tarfile.XHDTYPE, len(record))
        + _padded(record)
        + _header("ep/f", tarfile.REGTYPE, 999)  # the pax size overrides this one
        + _padded(b"hello")
        + b"\0" * 1024
    )
    assert _unpack(tmp_path, body)() == 5
    assert (tmp_path / "out" / "ep" / "f").read_bytes() == b"hello"


# --- zip central directory ----------------------------------------------------


def _zip_directory_bomb(entries: int, listed: int, *, zip64: bool = False) -> bytes:
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    entry = struct.Struct("<IHHHHHHIIIHHHHHII")
    directory = b"".join(
        entry.pack(0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0) + b"d/%05d" % i
        for i in range(entries)
    )
    head = local + directory
    if not zip64:
        return head + struct.pack(
            "<IHHHHIIH", 0x06054B50, 0, 0, listed, listed, len(directory), len(local), 0
        )
    record = struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, listed, listed, len(directory), len(local)
    )
    locator = struct.pack("<IIQI", 0x07064B50, 0, len(head), 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return head + record + locator + end


@pytest.mark.parametrize(
    "entries, listed, zip64, says",
    [
        (20_000, 20_000, False, "the zip lists 20000 members; at most 10"),
        (20_000, 3, False, "central directory of 1060000 bytes is too large"),
        (200, 3, False, "more than 10 archive members"),  # found by counting the entries
        (20_000, 20_000, True, "the zip lists 20000 members; at most 10"),
    ],
    ids=["many", "lies-with-a-big-directory", "lies-with-a-small-directory", "zip64"],
)
def test_a_zip_directory_is_counted_before_zipfile_parses_it(
    tmp_path, entries, listed, zip64, says
):
    body = _zip_directory_bomb(entries, listed, zip64=zip64)
    refused, peak = _refused_with_peak(_unpack(tmp_path, body))
    assert peak < BIG // 2, f"{peak} bytes allocated to refuse it"
    assert refused.status == 422 and says in refused.message, refused.message


def _as_zip64(data: bytes) -> bytes:
    """``data`` (a zip without comment) with its end record moved to zip64 records."""
    _, _, _, _, count, size, offset, _ = struct.unpack("<IHHHHIIH", data[-22:])
    head = data[:-22]
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, len(head), 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return head + record + locator + end


def test_a_zip64_end_record_is_read_as_zipfile_reads_it(make_service, episodes):
    client, _ = _client(make_service)
    body = _as_zip64(zip_dir(episodes))
    assert len(zipfile.ZipFile(io.BytesIO(body)).infolist()) == 9
    response = client.put("/v1/datasets", content=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["episodes"] == 3


# --- names and malformed archives ---------------------------------------------


def _tar(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _episode_members(episodes, rename=lambda name: name) -> list[tuple[str, bytes]]:
    return [
        (rename(p.relative_to(episodes).as_posix()), p.read_bytes())
        for p in sorted(episodes.rglob("*"))
        if p.is_file()
    ]


def _zip_patched(name: str, *, flags: int = 0, method: int | None = None, version=None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name.replace("\xff", "X")), b"{}")
    data = bytearray(buffer.getvalue())
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        old = struct.unpack_from("<H", data, at + flag_at)[0]
        struct.pack_into("<H", data, at + flag_at, old | flags)
        if method is not None:
            struct.pack_into("<H", data, at + method_at, method)
    if version is not None:
        data[data.find(b"PK\x01\x02") + 6] = version
    return bytes(data).replace(name.replace("\xff", "X").encode(), name.encode("latin-1"))


def test_member_names_must_be_utf8_without_control_characters(make_service, episodes):
    client, service = _client(make_service)
    non_utf8 = _tar(_episode_members(episodes, lambda n: os.fsdecode(b"ep\xff/") + n))
    for case, body in [
        ("non-utf8", non_utf8),
        ("newline", _tar(_episode_members(episodes) + [("notes/a\nb.txt", b"x")])),
        ("escape", _tar(_episode_members(episodes) + [("notes/\x1b[31m.txt", b"x")])),
        ("zip-control", _zip_patched("ep/a\x07.json")),
    ]:
        response = client.put("/v1/datasets", content=body, headers=AUTH)
        assert response.status_code == 422, (case, response.status_code, response.text)
        _assert_nothing_written(service)
    listed = client.get("/v1/datasets", headers=AUTH)
    assert listed.status_code == 200 and listed.json() == []


def _corrupt_bz2() -> bytes:
    # 100 kB blocks: the first (the tar header) decodes, a later one does not.
    raw = bz2.compress(_tar([("ep/a.bin", os.urandom(300_000))]), compresslevel=1)
    cut = len(raw) // 2
    return raw[:cut] + bytes(b ^ 0xFF for b in raw[cut : cut + 400]) + raw[cut + 400 :]


def _zip_local_name_not_utf8() -> bytes:
    """A zip whose central directory is sound but whose first local header says
    its name is UTF-8 (flag 0x800) and holds byte 0xFF: zipfile reads it only
    when the member is opened."""
    data = bytearray(_zip_of({"ep/a.json": b"{}"}))
    struct.pack_into("<H", data, 6, struct.unpack_from("<H", data, 6)[0] | 0x800)
    data[30] = 0xFF  # the name's first byte
    return bytes(data)


def _zip_directory_offset_one_too_far() -> bytes:
    """A zip whose end record puts the central directory one byte past where it
    is: zipfile takes the difference for a prefix of -1 bytes and seeks every
    member's local header to one byte before where it is (EINVAL for the first)."""
    data = bytearray(_zip_of({"ep/a.json": b"{}"}))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<L", data, end + 16, struct.unpack_from("<L", data, end + 16)[0] + 1)
    return bytes(data)


def _zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buffer.getvalue()


def test_malformed_uploads_are_422_not_500(make_service):
    client, service = _client(make_service)
    huge_length = ("9" * 5000 + " path=x\n").encode()  # pax record length past int()'s limit
    cases = [
        ("300-char-name", _tar([("a" * 300, b"x")], "w:gz")),
        ("256-byte-component", _tar([("ep/" + "é" * 128, b"x")])),
        ("1100-byte-name", _tar([("/".join(["b" * 200] * 5) + "/" + "c" * 100, b"x")])),
        ("corrupt-bz2", _corrupt_bz2()),
        ("pax-number", _header("p", tarfile.XHDTYPE, len(huge_length)) + _padded(huge_length)),
        ("zip-utf8-flag-not-utf8", _zip_patched("ep/a\xff.json", flags=0x800)),
        ("zip-unknown-method", _zip_patched("ep/a.json", method=99)),
        ("zip-version-too-new", _zip_patched("ep/a.json", version=99)),
        ("zip-local-name-not-utf8", _zip_local_name_not_utf8()),
        ("zip-directory-offset-one-too-far", _zip_directory_offset_one_too_far()),
    ]
    for case, body in cases:
        response = client.put("/v1/datasets", content=body, headers=AUTH)
        assert response.status_code == 422, (case, response.status_code, response.text)
        if case.startswith("zip-local") or case.startswith("zip-directory"):
            detail = response.json()["detail"]
            assert "corrupt zip archive: the local header of member 'ep/a.json'" in detail
        assert str(service.store.root) not in response.text
        _assert_nothing_written(service)


# --- episode files ------------------------------------------------------------


@pytest.fixture
def one_episode(tmp_path, episodes):
    """``(root, episode dir, its first step record)``: a copy of one fixture episode."""
    root = tmp_path / "upload"
    source = sorted(p for p in episodes.iterdir() if p.is_dir())[0]
    shutil.copytree(source, root / source.name)
    directory = root / source.name
    step = json.loads((directory / "steps.jsonl").read_text().splitlines()[0])
    return root, directory, step


def _write(directory, steps: list[dict] | list[bytes], count: int | None = None, **header):
    lines = [s if isinstance(s, bytes) else (json.dumps(s) + "\n").encode() for s in steps]
    (directory / "steps.jsonl").write_bytes(b"".join(lines))
    doc = json.loads((directory / "episode.json").read_text())
    doc["outcome"]["steps"] = len(steps) if count is None else count
    doc.update({"complete": True, **header})
    (directory / "episode.json").write_text(json.dumps(doc))


def test_steps_are_validated_one_line_at_a_time(one_episode):
    from browser_env.episodes.loader import load_episode
    from serve.uploads import check_episodes

    root, directory, step = one_episode
    _write(directory, [{**step, "index": i} for i in range(3000)])
    size = (directory / "steps.jsonl").stat().st_size
    assert size > 2 * BIG
    tracemalloc.start()
    try:
        assert check_episodes(root) == [directory.name]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < BIG // 2, f"{peak} bytes allocated to check {size} bytes of steps"
    assert len(load_episode(directory).steps) == 3000  # the loader agrees


def test_a_record_over_the_cap_is_refused_before_it_is_read(one_episode):
    from serve.uploads import check_episodes

    root, directory, step = one_episode
    _write(directory, [{**step, "reason": "r" * BIG}])
    refused, peak = _refused_with_peak(lambda: check_episodes(root, max_record_bytes=64 << 10))
    assert "steps.jsonl line 1 is longer than 65536 bytes" in refused.message
    assert peak < BIG // 2
    _write(directory, [step], padding="p" * (100 << 10))
    refused, _ = _refused_with_peak(lambda: check_episodes(root, max_record_bytes=64 << 10))
    assert "episode.json is larger than 65536 bytes" in refused.message


def test_step_files_are_judged_as_the_loader_judges_them(one_episode):
    from browser_env.episodes.format import EpisodeFormatError
    from browser_env.episodes.loader import load_episode
    from serve.uploads import UploadRejected, check_episodes

    root, directory, step = one_episode
    torn = json.dumps({**step, "index": 1}).encode()[:50]
    cases = [
        ("torn-tail-incomplete", [step, torn], {"count": 1, "complete": False}, True),
        ("torn-tail-complete", [step, torn], {"count": 1}, False),
        ("blank-lines", [step, b"\n", b"  \n"], {"count": 1}, True),
        ("out-of-order", [{**step, "index": 1}], {}, False),
        ("not-an-object", [b"[1, 2]\n"], {}, False),
        (
            "missing-screenshot",
            [
                {
                    **step,
                    "observation": {**step["observation"], "screenshot": "screenshots/nope.png"},
                }
            ],
            {},
            False,
        ),  # fmt: skip
    ]
    for case, steps, header, accepted in cases:
        _write(directory, steps, **header)
        try:
            load_episode(directory)
            loader_accepts = True
        except (EpisodeFormatError, ValueError):
            loader_accepts = False
        try:
            check_episodes(root)
            accepts = True
        except UploadRejected as exc:
            accepts = False
            assert exc.status == 422 and str(root) not in exc.message, case
        assert accepts == loader_accepts == accepted, case


def test_hostile_step_lines_are_422(one_episode):
    from serve.uploads import check_episodes

    root, directory, step = one_episode
    for case, line in [
        ("deep-nesting", b"[" * 100_000 + b"\n"),
        ("huge-number", json.dumps({**step, "time": 10**400}).encode() + b"\n"),
        ("not-utf8", b'{"index": 0, "x": "\xff"}\n'),
    ]:
        _write(directory, [line])
        refused, _ = _refused_with_peak(lambda: check_episodes(root))
        assert refused.status == 422 and "line 1" in refused.message, case


def test_screenshot_paths_are_contained_before_anything_looks_for_them(make_service, one_episode):
    client, service = _client(make_service)
    root, directory, step = one_episode
    details = []
    for probe in ("../../../../../../../../etc/passwd", "../../../../../../../../etc/no-such"):
        _write(directory, [{**step, "observation": {**step["observation"], "screenshot": probe}}])
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(directory, arcname=directory.name)
        response = client.put("/v1/datasets", content=buffer.getvalue(), headers=AUTH)
        assert response.status_code == 422, response.text
        details.append(response.json()["detail"].replace(probe, "PROBE"))
        assert str(service.store.root) not in response.text and "/tmp" not in details[-1]
        _assert_nothing_written(service)
    assert details[0] == details[1]  # the same answer whether the path exists or not
    assert "outside" in details[0] and "steps.jsonl line 1" in details[0]

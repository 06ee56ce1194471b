import io
import stat
import zipfile
import zlib
from pathlib import Path

import pytest

from utils.studio.paths import PathRefused, extract_zip, is_inside, resolve_folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "root" / "photos" / "a.png").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


def test_relative_folder_resolves_inside(root):
    assert resolve_folder(root, "photos") == (root / "photos").resolve()
    assert resolve_folder(root, " photos/2024 ") == (root / "photos" / "2024").resolve()


def test_empty_name_is_the_root(root):
    assert resolve_folder(root, "") == root.resolve()


def test_absolute_path_inside_root_is_accepted(root):
    assert resolve_folder(root, str(root / "photos")) == (root / "photos").resolve()


@pytest.mark.parametrize("name", ["..", "../outside", "photos/../../outside", "photos/../photos"])
def test_dotdot_is_refused_even_when_it_lands_inside(root, name):
    with pytest.raises(PathRefused, match=r"'\.\.' is not allowed"):
        resolve_folder(root, name)


def test_absolute_path_elsewhere_is_refused(root, tmp_path):
    with pytest.raises(PathRefused, match="outside the batch root"):
        resolve_folder(root, str(tmp_path / "outside"))
    with pytest.raises(PathRefused, match="outside the batch root"):
        resolve_folder(root, "/etc")


def test_symlink_leading_out_is_refused(root, tmp_path):
    (root / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(PathRefused, match="symbolic link"):
        resolve_folder(root, "escape")


def test_symlink_staying_inside_is_accepted(root):
    (root / "alias").symlink_to(root / "photos")
    assert resolve_folder(root, "alias") == (root / "photos").resolve()


def test_missing_folder_and_file_are_refused(root):
    with pytest.raises(PathRefused, match="no such folder"):
        resolve_folder(root, "nope")
    with pytest.raises(PathRefused, match="not a folder"):
        resolve_folder(root, "photos/a.png")


def test_nul_byte_is_refused(root):
    with pytest.raises(PathRefused, match="NUL"):
        resolve_folder(root, "photos\x00")


def test_is_inside_follows_symlinks(root, tmp_path):
    (tmp_path / "outside" / "b.png").write_bytes(b"x")
    (root / "photos" / "link.png").symlink_to(tmp_path / "outside" / "b.png")
    assert is_inside(root / "photos" / "a.png", root)
    assert not is_inside(root / "photos" / "link.png", root)


def _zip(tmp_path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_zip_extracts_kept_members(tmp_path):
    archive = _zip(tmp_path, {"a.png": b"1", "sub/b.jpg": b"22", "notes.txt": b"333"})
    out = tmp_path / "out"
    written = extract_zip(archive, out, max_bytes=100, max_members=10, keep=lambda n: not n.endswith(".txt"))
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["a.png", "sub/b.jpg"]
    assert (out / "sub" / "b.jpg").read_bytes() == b"22"


@pytest.mark.parametrize("name, why", [("../evil.png", r"'\.\.'"), ("/abs/evil.png", "absolute"),
                                       ("C:/evil.png", "absolute"), ("ok/..\\..\\evil.png", r"'\.\.'")])
def test_zip_with_unsafe_member_is_refused_before_writing(tmp_path, name, why):
    archive = _zip(tmp_path, {"a.png": b"1", name: b"2"})
    out = tmp_path / "out"
    with pytest.raises(PathRefused, match=why):
        extract_zip(archive, out, max_bytes=100, max_members=10)
    assert not out.exists()


def test_zip_with_symlink_member_is_refused(tmp_path):
    with pytest.raises(PathRefused, match="symbolic link"):
        extract_zip(_zip(tmp_path, {"a.png": b"1"}, symlink="link.png"), tmp_path / "out", 100, 10)


def test_zip_limits(tmp_path):
    archive = _zip(tmp_path, {f"{i}.png": b"0" * 60 for i in range(3)})
    with pytest.raises(PathRefused, match="entries"):
        extract_zip(archive, tmp_path / "out", max_bytes=10_000, max_members=2)
    with pytest.raises(PathRefused, match="uncompressed size"):
        extract_zip(archive, tmp_path / "out", max_bytes=100, max_members=10)


def _lying_zip(tmp_path: Path, compression: int, declared: int, crc_of_declared: bool) -> Path:
    """An honest a.png, then big.png (5000 bytes) whose central directory declares ``declared`` bytes, with
    the CRC of the whole data or, when ``crc_of_declared``, of just the declared bytes (a consistent lie)."""
    data = bytes(range(256)) * 20
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("a.png", b"1" * 30)
        zf.writestr("big.png", data[:5000])
    raw = bytearray(buf.getvalue())
    central = raw.rfind(b"PK\x01\x02")  # big.png's entry: the last one in the central directory
    raw[central + 24:central + 28] = declared.to_bytes(4, "little")  # uncompressed size
    if crc_of_declared:
        raw[central + 16:central + 20] = zlib.crc32(data[:declared]).to_bytes(4, "little")
    archive = tmp_path / "lie.zip"
    archive.write_bytes(bytes(raw))
    return archive


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_zip_member_whose_size_lies_refuses_the_archive_and_leaves_no_files(tmp_path, compression):
    # The declared size passes the byte budget; reading stops there and the CRC no longer matches.
    out = tmp_path / "out"
    with pytest.raises(PathRefused, match=r"^lie\.zip: not a readable zip archive \(Bad CRC-32 for file 'big\.png'\)"):
        extract_zip(_lying_zip(tmp_path, compression, 10, False), out, max_bytes=100, max_members=10)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # a.png was written first, then removed


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_zip_member_never_yields_more_than_its_declared_size(tmp_path, compression):
    # A lie with a matching CRC is not detectable, but the budget still holds: only the declared bytes come out.
    out = tmp_path / "out"
    written = extract_zip(_lying_zip(tmp_path, compression, 10, True), out, max_bytes=40, max_members=10)
    assert {p.name: p.stat().st_size for p in written} == {"a.png": 30, "big.png": 10}


def test_not_a_zip_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"definitely not a zip")
    with pytest.raises(PathRefused, match="not a readable zip"):
        extract_zip(bad, tmp_path / "out", 100, 10)

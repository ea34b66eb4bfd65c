import gzip
import zipfile

import numpy as np
import pytest

from conftest import fer_rows, write_csv
from fer.data import load_dataset
from fer.errors import DataFormatError


def test_plain_csv_roundtrip(tmp_path):
    lines, images, labels, _ = fer_rows()
    ds = load_dataset(write_csv(tmp_path / "fer2013.csv", lines))
    assert ds.images.dtype == np.uint8 and ds.images.shape == (12, 48, 48)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    assert list(ds.splits[-5:]) == ["train", "public_test", "public_test", "private_test", "private_test"]
    assert ds.provenance["format"] == "fer2013.csv" and not ds.is_synthetic
    assert ds.id.startswith("fer2013-")


def test_gz_and_zip_give_the_same_dataset(tmp_path):
    lines, images, _, _ = fer_rows()
    plain = write_csv(tmp_path / "fer2013.csv", lines)
    gz = tmp_path / "copy.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    zp = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.write(plain, "fer2013/fer2013.csv")
    for src in (gz, zp):
        ds = load_dataset(src)
        np.testing.assert_array_equal(ds.images, images)


def test_second_load_hits_the_cache(tmp_path, monkeypatch):
    lines, images, _, _ = fer_rows()
    path = write_csv(tmp_path / "fer2013.csv", lines)
    first = load_dataset(path)
    assert first.provenance["cache"] == "miss"
    import fer.data.kaggle as kaggle

    def boom(*a, **k):
        raise AssertionError("parser called on a cache hit")

    monkeypatch.setattr(kaggle, "read_fer2013_csv", boom)
    second = load_dataset(path)
    assert second.provenance["cache"] == "hit"
    np.testing.assert_array_equal(second.images, images)
    # Same content under another name: still a hit (keyed by content hash, not path).
    other = tmp_path / "renamed.csv"
    other.write_bytes(path.read_bytes())
    assert load_dataset(other).provenance["cache"] == "hit"


@pytest.mark.parametrize("mutate, expected", [
    (lambda l: l[:5] + [l[5].rsplit(" ", 1)[0] + "," + l[5].rsplit(",", 1)[1]] + l[6:],
     r"row 5 \(line 7\): pixels has 2303 values, expected 2304"),
    (lambda l: l[:3] + [l[3].replace(",", ",300 ", 1).replace(" ", "", 0)] + l[4:],
     r"row 3 .*pixels has 2305 values"),
    (lambda l: l[:2] + ["9" + l[2][1:]] + l[3:], r"row 2 \(line 4\): emotion is 9, expected 0..6"),
    (lambda l: l[:4] + ["x" + l[4][1:]] + l[5:], r"row 4 .*emotion is 'x'"),
    (lambda l: l[:1] + [l[1].rsplit(",", 1)[0] + ",Validation"] + l[2:], r"row 1 .*Usage is 'Validation'"),
])
def test_malformed_rows_name_the_row(tmp_path, mutate, expected):
    lines, *_ = fer_rows()
    with pytest.raises(DataFormatError, match=expected):
        load_dataset(write_csv(tmp_path / "bad.csv", mutate(lines)))


def test_pixel_out_of_range_names_row_and_position(tmp_path):
    lines, *_ = fer_rows()
    label, pixels, usage = lines[7].split(",")
    vals = pixels.split(" ")
    vals[10] = "256"
    lines[7] = f"{label},{' '.join(vals)},{usage}"
    with pytest.raises(DataFormatError, match=r"bad.csv row 7 \(line 9\): pixels value 10 is 256, expected 0..255"):
        load_dataset(write_csv(tmp_path / "bad.csv", lines))


def test_missing_column_and_empty_file(tmp_path):
    lines, *_ = fer_rows()
    with pytest.raises(DataFormatError, match="missing column.*Usage"):
        load_dataset(write_csv(tmp_path / "a.csv", [l.rsplit(",", 1)[0] for l in lines], "emotion,pixels"))
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty.csv: the file is empty"):
        load_dataset(tmp_path / "empty.csv")
    with pytest.raises(DataFormatError, match="no such file"):
        load_dataset(tmp_path / "nope.csv")


def test_truncated_gzip_is_a_clear_error(tmp_path):
    lines, *_ = fer_rows()
    data = gzip.compress(write_csv(tmp_path / "x.csv", lines).read_bytes())
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="cut.csv.gz"):
        load_dataset(tmp_path / "cut.csv.gz")


def test_synthetic_default_is_labelled_and_deterministic():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert a.is_synthetic and a.provenance["format"] == "synthetic"
    np.testing.assert_array_equal(a.images, b.images)
    assert set(np.unique(a.splits)) == {"train", "public_test", "private_test"}


def test_real_fer2013_counts(real_csv):
    ds = load_dataset(real_csv)
    c = ds.counts()
    # Canonical FER2013 counts per Usage and class (Goodfellow et al. 2013).
    assert c["train"].tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert c["public_test"].tolist() == [467, 56, 496, 895, 653, 415, 607]
    assert c["private_test"].tolist() == [491, 55, 528, 879, 594, 416, 626]
    # Rows 0-28708 are Training, then PublicTest, then PrivateTest.
    assert (ds.indices("public_test")[[0, -1]] == [28709, 32297]).all()
    # The 12 all-black images are a known defect of the original data.
    assert int((ds.images.reshape(len(ds), -1).max(1) == 0).sum()) == 12


# ---------------------------------------------------------------- FER_DATA_ROOT (shared servers)
@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """tmp/course (the allowed root, holding fer2013.csv) beside tmp/private (not allowed)."""
    (tmp_path / "course").mkdir()
    (tmp_path / "private").mkdir()
    (tmp_path / "course" / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    (tmp_path / "private" / "secret.csv").write_text("emotion,pixels,Usage\n")
    monkeypatch.setenv("FER_DATA_ROOT", str(tmp_path / "course"))
    return tmp_path


def test_a_path_inside_the_data_root_is_allowed(data_root):
    from fer.data import check_allowed_source

    want = str(data_root / "course" / "fer2013.csv")
    assert check_allowed_source(want) == want
    assert check_allowed_source(f"  {data_root}/course/sub/../fer2013.csv ") == want  # .. inside the root
    (data_root / "course" / "alias.csv").symlink_to(data_root / "course" / "fer2013.csv")
    assert check_allowed_source(data_root / "course" / "alias.csv") == want  # a link that stays inside
    assert check_allowed_source(data_root / "course") == str(data_root / "course")
    assert check_allowed_source("synthetic") == "synthetic"
    assert check_allowed_source("synthetic:3") == "synthetic:3"


@pytest.mark.parametrize("typed, resolves", [
    ("{tmp}/private/secret.csv", None),
    ("{tmp}/course/../private/secret.csv", "{tmp}/private/secret.csv"),     # .. escape
    ("{tmp}/course/link/secret.csv", "{tmp}/private/secret.csv"),           # symlink escape
    ("{tmp}/course/link.csv", "{tmp}/private/secret.csv"),                  # a file symlink out
    ("/etc/passwd", None),
    ("{tmp}/course-evil/x.csv", None),                                      # a prefix is not inside
])
def test_a_path_outside_the_data_root_is_refused(data_root, typed, resolves):
    from fer.data import check_allowed_source, path_allowed
    from fer.errors import DataPathError, FerError

    (data_root / "course" / "link").symlink_to(data_root / "private", target_is_directory=True)
    (data_root / "course" / "link.csv").symlink_to(data_root / "private" / "secret.csv")
    typed, tmp = typed.format(tmp=data_root), data_root
    via = f" (it resolves to {resolves.format(tmp=tmp)})" if resolves else ""
    with pytest.raises(DataPathError) as e:
        check_allowed_source(typed)
    assert str(e.value) == (f"{typed}: refused{via}; on this server data paths must lie inside "
                            f"{tmp}/course (FER_DATA_ROOT). Put the file there, or upload it on the Train page")
    assert isinstance(e.value, FerError) and not path_allowed(typed)


def test_extra_allowed_folders_and_no_root_means_no_limit(data_root, monkeypatch):
    from fer.data import check_allowed_source
    from fer.errors import DataPathError

    secret = str(data_root / "private" / "secret.csv")
    assert check_allowed_source(secret, also=(data_root / "private",)) == secret  # e.g. the app's uploads
    with pytest.raises(DataPathError):
        check_allowed_source(secret, also=(data_root / "other",))
    monkeypatch.delenv("FER_DATA_ROOT")
    assert check_allowed_source(secret) == secret
    assert check_allowed_source("/etc/passwd") == "/etc/passwd"
    monkeypatch.setenv("FER_DATA_ROOT", "  ")  # blank counts as unset
    assert check_allowed_source(secret) == secret

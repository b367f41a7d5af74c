"""Issue 15, import side: hostile photo folders and caption tables never stop `data import`.

Every bad entry is skipped with its reason and counted; names that are not UTF-8 are imported
with valid UTF-8 metadata; caption tables keep their good rows whatever else they hold.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dishgen.cli import cli
from dishgen.data.build import BuildOptions, build_dataset
from dishgen.data.importer import (
    ImportError_,
    import_caption_table,
    import_photo_folder,
    read_caption_table,
)
from dishgen.data.records import clean_text

SAMPLE_JPGS = sorted((Path(__file__).parent / "data" / "ffml_sample" / "images").rglob("*.jpg"))


def _strict_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file that must be valid UTF-8 throughout."""
    return [json.loads(line) for line in path.read_bytes().decode("utf-8", errors="strict").splitlines()]


def test_names_that_are_not_utf8_are_imported_and_built(tmp_path: Path):
    photos = tmp_path / "photos"
    bad_dish = os.path.join(os.fsencode(photos), b"caf\xff dish")
    good_dish = photos / "SARMA"
    os.makedirs(bad_dish)
    good_dish.mkdir()
    shutil.copy(SAMPLE_JPGS[0], os.path.join(bad_dish, b"\xfe\xfd.jpg"))
    shutil.copy(SAMPLE_JPGS[1], os.path.join(bad_dish, b"ok.jpg"))
    shutil.copy(SAMPLE_JPGS[2], good_dish / "01.jpg")
    shutil.copy(SAMPLE_JPGS[3], os.fsdecode(bytes(good_dish) + b"/\xc3(.jpg"))  # a broken 2-byte sequence

    raw = Path(os.fsdecode(bytes(tmp_path) + b"/raw \xff"))  # the raw folder's own name is not UTF-8 either
    result = import_photo_folder(photos, raw, source="test")
    assert result["added"] == 4 and result["skipped"] == []
    rows = _strict_jsonl(raw / "recipes.jsonl")
    assert sorted(r["name"] for r in rows) == ["SARMA", "SARMA", "caf\ufffd dish", "caf\ufffd dish"]
    assert {r["original_path"] for r in rows} >= {"caf\ufffd dish/\ufffd\ufffd.jpg", "SARMA/\ufffd(.jpg"}
    for row in rows:  # copied under a generated name: the content hash
        assert Path(row["image"]).name.isascii() and (raw / row["image"]).is_file()
    # Re-import: the same ids, nothing added, even past a line of recipes.jsonl that is no record.
    with open(raw / "recipes.jsonl", "a", encoding="utf-8") as f:
        f.write("[1, 2]\n")
    assert import_photo_folder(photos, raw, source="test")["already_present"] == 4

    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, min_size=16, workers=1, test_fraction=0.0))
    assert summary["counts"]["train"]["images"] == 4 and summary["dropped_by_reason"] == {"bad_record": 1}
    metadata = _strict_jsonl(tmp_path / "ds" / "train" / "metadata.jsonl")
    assert {r["dish"] for r in metadata} == {"SARMA", "caf\ufffd dish"}
    built = json.loads((tmp_path / "ds" / "dataset.json").read_bytes().decode("utf-8"))
    assert built["inputs"][0]["path"].endswith("raw \ufffd")


def test_fifos_loops_dangling_links_and_odd_folders_are_skipped_and_counted(tmp_path: Path):
    photos = tmp_path / "photos"
    dish = photos / "PITA"
    dish.mkdir(parents=True)
    shutil.copy(SAMPLE_JPGS[0], dish / "01.jpg")
    os.mkfifo(dish / "pipe.jpg")  # opening it for reading would block forever
    os.symlink("loop_b.jpg", dish / "loop_a.jpg")
    os.symlink("loop_a.jpg", dish / "loop_b.jpg")
    os.symlink("missing.jpg", dish / "dangling.jpg")
    os.symlink("..", dish / "up")  # a folder loop
    (dish / "photo.jpg").mkdir()  # a folder named like an image, empty
    (dish / "album.jpg").mkdir()  # a folder named like an image, with a photo inside: imported
    shutil.copy(SAMPLE_JPGS[1], dish / "album.jpg" / "inside.jpg")
    (dish / ".DS_Store").write_bytes(b"\0")
    (dish / "notes.txt").write_text("not an image")

    raw = tmp_path / "raw"
    result = import_photo_folder(photos, raw)
    reasons = {Path(path).name: reason for path, reason in result["skipped"]}
    assert result["added"] == 2
    assert reasons == {
        "pipe.jpg": "a named pipe (FIFO), not a regular file",
        "loop_a.jpg": "symlink loop (the link leads back to itself)",
        "loop_b.jpg": "symlink loop (the link leads back to itself)",
        "dangling.jpg": "broken symlink (its target does not exist)",
        "up": f"symlink loop: it leads back to {photos}",
        "photo.jpg": "a folder named like an image file, holding no files",
        ".DS_Store": "hidden file (its name starts with '.')",
        "notes.txt": "not an image file (by extension)",
    }
    recorded = _strict_jsonl(raw / "import-skipped.jsonl")  # the record a user can read after the run
    assert {(r["path"], r["reason"]) for r in recorded} == set(result["skipped"])
    names = {r["original_path"]: r["name"] for r in _strict_jsonl(raw / "recipes.jsonl")}
    assert names == {"PITA/01.jpg": "PITA", "PITA/album.jpg/inside.jpg": "PITA"}

    out = CliRunner().invoke(cli, ["data", "import", str(photos), "--out", str(tmp_path / "raw2")])
    assert out.exit_code == 0, out.output
    assert "imported 2 images" in out.output and "8 skipped" in out.output
    assert "pipe.jpg: a named pipe (FIFO)" in out.output


def _write_table(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_caption_table_bad_rows_are_skipped_with_the_line_and_reason(tmp_path: Path):
    for i in range(3):
        shutil.copy(SAMPLE_JPGS[i], tmp_path / f"{i}.jpg")
    table = _write_table(tmp_path / "captions.csv", [
        b"image,caption",
        b"0.jpg,\x1b[31mA plate of   sarma\x1b[0m\twith bread",  # ANSI + whitespace: cleaned, kept
        b"1.jpg,bad \xe8\xe6 bytes",  # Windows-1250, not UTF-8
        b"1.jpg,a NUL \x00 inside",
        b"2.jpg," + b"x" * 20_000,  # a huge caption
        b"2.jpg," + b"y" * 200_000,  # larger than the csv module's field limit
        b"only-one-column",
        b"1.jpg,\"A bowl of \"\"pasulj\"\", steaming\"",
        b"2.jpg,   ",
        b"2.jpg,Gibanica on a board",
    ])
    pairs, skipped = read_caption_table(table)
    assert pairs == [("0.jpg", "A plate of sarma with bread"), ("1.jpg", 'A bowl of "pasulj", steaming'),
                     ("2.jpg", "Gibanica on a board")]
    where = {int(w.rsplit(":", 1)[1]): reason for w, reason in skipped}
    assert set(where) == {3, 4, 5, 6, 7, 9}
    assert "not valid text" in where[3] and "UTF-8" in where[3]
    assert "NUL" in where[4]
    assert "20,000 characters" in where[5]
    assert "field limit" in where[6]
    assert "1 column(s), the header has 2" in where[7]
    assert where[9] == "empty caption"

    result = import_caption_table(table, tmp_path / "raw")
    assert result["added"] == 3 and len(result["skipped"]) == 6
    rows = _strict_jsonl(tmp_path / "raw" / "recipes.jsonl")
    assert [r["captions"] for r in rows] == [["A plate of sarma with bread"], ['A bowl of "pasulj", steaming'],
                                             ["Gibanica on a board"]]


def test_a_table_cannot_pull_in_files_from_outside_its_images_folder(tmp_path: Path):
    """A caption table from elsewhere names only files under its images folder: an absolute path
    or a ``..`` that climbs out is skipped with its reason, so a secret never lands in the raw folder
    (and from there in a dataset pushed to the hub). A symlink the folder's owner made is followed."""
    shared = tmp_path / "shared"
    (shared / "photos").mkdir(parents=True)
    shutil.copy(SAMPLE_JPGS[0], shared / "photos" / "sarma.jpg")
    secret = tmp_path / "home" / "id_key.jpg"
    secret.parent.mkdir()
    secret.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    elsewhere = tmp_path / "library" / "pasulj.jpg"
    elsewhere.parent.mkdir()
    shutil.copy(SAMPLE_JPGS[1], elsewhere)
    os.symlink(elsewhere, shared / "photos" / "pasulj.jpg")
    table = _write_table(shared / "captions.csv", [
        b"image,caption",
        b"photos/sarma.jpg,Sarma in a clay pot",
        b"../home/id_key.jpg,a key",
        b"photos/../../home/id_key.jpg,the key again",
        os.fsencode(secret) + b",the key by its absolute path",
        b"photos/pasulj.jpg,Pasulj in a clay dish",
    ])
    result = import_caption_table(table, tmp_path / "raw")
    assert result["added"] == 2
    reasons = dict(result["skipped"])
    assert set(reasons) == {"../home/id_key.jpg", "photos/../../home/id_key.jpg", str(secret)}
    assert all("outside the images folder" in r and "--images-dir" in r for r in reasons.values())
    copied = [p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    assert not any(b"PRIVATE KEY" in data for data in copied)
    # With --images-dir a folder above, the absolute path lies inside it: the user asked for that folder.
    again = import_caption_table(table, tmp_path / "raw2", images_dir=tmp_path)
    assert again["added"] == 1 and len(again["skipped"]) == 4  # the paths relative to shared/ are not found
    assert dict(again["skipped"]).keys() >= {"../home/id_key.jpg", "photos/../../home/id_key.jpg"}


def test_utf16_table_and_jsonl_table_with_bad_lines(tmp_path: Path):
    shutil.copy(SAMPLE_JPGS[0], tmp_path / "a.jpg")
    shutil.copy(SAMPLE_JPGS[1], tmp_path / "b.jpg")
    table = tmp_path / "utf16.tsv"
    table.write_bytes(codecs.BOM_UTF16_LE + "image\tcaption\na.jpg\tĆevapi sa lukom\n".encode("utf-16-le"))
    assert read_caption_table(table) == ([("a.jpg", "Ćevapi sa lukom")], [])

    table = _write_table(tmp_path / "captions.jsonl", [
        json.dumps({"file_name": "a.jpg", "text": ["one", "two\u0000 half", 3]}).encode(),
        b"{not json",
        b"[1, 2]",
        json.dumps({"picture": "b.jpg", "text": "no image key"}).encode(),
        b"[" * 100_000,  # deep nesting
        json.dumps({"file_name": "b.jpg", "caption": "Sarma"}).encode(),
    ])
    pairs, skipped = read_caption_table(table)
    assert pairs == [("a.jpg", "one"), ("b.jpg", "Sarma")]
    reasons = [reason for _, reason in skipped]
    assert [w.rsplit(":", 1)[1] for w, _ in skipped] == ["1", "1", "2", "3", "4", "5"]
    assert "NUL" in reasons[0] and "must be text" in reasons[1] and "not valid JSON" in reasons[2]
    assert "not a JSON object" in reasons[3] and "no image key" in reasons[4] and "not valid JSON" in reasons[5]


def test_tables_that_cannot_be_read_at_all_are_one_clear_error(tmp_path: Path):
    for content, message in ((b"", "is empty"), (b"image caption\nx y\n", "cannot tell the delimiter"),
                             (b"picture,words\na.jpg,x\n", "has no image column")):
        table = tmp_path / "t.csv"
        table.write_bytes(content)
        with pytest.raises(ImportError_, match=message):
            import_caption_table(table, tmp_path / "raw")
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(ImportError_, match="not a regular file"):
        import_caption_table(tmp_path / "fifo.csv", tmp_path / "raw")
    # All rows bad: the error says why, with the first row's reason.
    _write_table(tmp_path / "t.csv", [b"image,caption", b"a.jpg,\x00"])
    with pytest.raises(ImportError_, match=r"holds no image/caption rows; the first skipped row: .*t\.csv:2: .*NUL"):
        import_caption_table(tmp_path / "t.csv", tmp_path / "raw")


# ---- property-based: whatever the table holds, only ImportError_ escapes, and good rows are kept ----

_GOOD_IMAGE = st.from_regex(r"[a-z0-9_]{1,12}\.jpg", fullmatch=True)
_GOOD_CAPTION = st.from_regex(r"[A-Za-z][A-Za-z ]{0,30}[a-z]", fullmatch=True)
_GARBAGE_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\"'"), max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delimiter=st.sampled_from([",", "\t", "|", ";"]),
       good=st.lists(st.tuples(_GOOD_IMAGE, _GOOD_CAPTION), max_size=6),
       garbage=st.lists(_GARBAGE_LINE, max_size=6), data=st.data())
def test_fuzz_tables_keep_every_valid_row(delimiter, good, garbage, data):
    lines = [f"image{delimiter}caption"] + [f"{image}{delimiter}{caption}" for image, caption in good]
    for line in garbage:  # garbage anywhere between the good rows
        lines.insert(data.draw(st.integers(1, len(lines))), line)
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "t.csv"
        table.write_text("\n".join(lines) + "\n", encoding="utf-8")
        pairs, skipped = read_caption_table(table)
    assert {(image, clean_text(caption)) for image, caption in good} <= set(pairs)  # runs of spaces become one
    for image, caption in pairs:
        assert caption == clean_text(caption) and caption and image.strip() == image and "\0" not in caption + image
    for where, reason in skipped:
        assert where.startswith(str(table)) and reason


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
       header=st.sampled_from([b"", b"image,caption\n", b"file_name|comment\n", b"\xff\xfe"]))
def test_fuzz_table_bytes_raise_only_import_errors(content, suffix, header):
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / f"t{suffix}"
        table.write_bytes(header + content)
        try:
            pairs, skipped = read_caption_table(table)
        except ImportError_ as err:
            assert "\n" not in str(err)
            return
    for image, caption in pairs:
        image.encode("utf-8")  # never a lone surrogate
        assert caption == clean_text(caption) and caption


# ---- property-based: any file names, including bytes that are not UTF-8 ----

_NAME = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(_NAME, st.lists(_NAME, min_size=1, max_size=4, unique=True), min_size=1, max_size=4))
def test_fuzz_folder_names_every_file_is_imported_or_skipped_with_a_reason(tree):
    with tempfile.TemporaryDirectory() as tmp:
        photos = os.path.join(os.fsencode(tmp), b"photos")
        for index, (folder, names) in enumerate(tree.items()):
            os.makedirs(os.path.join(photos, folder))
            for name in names:
                with open(os.path.join(photos, folder, name), "wb") as f:
                    f.write(f"{index}/{name!r}".encode())
        raw = Path(tmp) / "raw"
        try:
            result = import_photo_folder(os.fsdecode(photos), raw)
        except ImportError_ as err:  # every entry hidden or a non-image extension
            assert "no image files found" in str(err)
            return
        rows = _strict_jsonl(raw / "recipes.jsonl")
    skipped_files = [path for path, reason in result["skipped"] if not reason.startswith("hidden folder")]
    in_visible_folders = sum(len(names) for folder, names in tree.items() if not folder.startswith(b"."))
    assert result["added"] == len(rows)
    assert result["added"] + len(skipped_files) == in_visible_folders
    for row in rows:
        assert row.get("name", "") == clean_text(row.get("name", ""))
        json.dumps(row, ensure_ascii=False).encode("utf-8")

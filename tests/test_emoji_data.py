"""The emoji/icon corpus builder: formats, captions, held-out cells, idempotent rebuilds, and bad
input (missing package, broken SVG, unreadable file) that is reported while the build goes on."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from wordpaint.data import emoji
from wordpaint.errors import WordpaintError

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24">'
       '<circle cx="12" cy="12" r="8" fill="{fill}"/></svg>')


def _fake_packages(root):
    """Minimal copies of the real packages' layouts: two PNG emoji, two SVG emoji (one broken), an icon set."""
    dirs = {}
    g = root / "emoji-datasource-google"
    (g / "img" / "google" / "64").mkdir(parents=True)
    entries = [
        {"name": "FOX FACE", "unified": "1F98A", "image": "1f98a.png", "category": "Animals & Nature", "has_img_google": True},
        {"name": "RED APPLE", "unified": "1F34E", "image": "1f34e.png", "category": "Food & Drink", "has_img_google": True},
        {"name": "SKIN", "unified": "1F3FB", "image": "1f3fb.png", "category": "Component", "has_img_google": True},
    ]
    (g / "emoji.json").write_text(json.dumps(entries))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (255, 0, 0, 255)  # a red square on a transparent canvas
    for e in entries:
        Image.fromarray(rgba).save(g / "img" / "google" / "64" / e["image"])
    dirs["emoji-datasource-google"] = g
    o = root / "openmoji"
    (o / "data").mkdir(parents=True)
    (o / "color" / "svg").mkdir(parents=True)
    om = [
        {"hexcode": "1F98A", "annotation": "fox", "tags": "fox, face", "openmoji_tags": "", "group": "animals-nature", "skintone": ""},
        {"hexcode": "1F34E", "annotation": "red apple", "tags": "apple", "openmoji_tags": "", "group": "food-drink", "skintone": ""},
        {"hexcode": "1F476-1F3FD", "annotation": "baby: medium", "tags": "", "openmoji_tags": "", "group": "people-body", "skintone": 3},
    ]
    (o / "data" / "openmoji.json").write_text(json.dumps(om))
    (o / "color" / "svg" / "1F98A.svg").write_text(SVG.format(fill="#ff8800"))
    (o / "color" / "svg" / "1F34E.svg").write_text("<svg this is not xml")
    dirs["openmoji"] = o
    k = root / "emojibase-data"
    (k / "en").mkdir(parents=True)
    (k / "en" / "data.json").write_text(json.dumps([
        {"label": "fox", "hexcode": "1F98A", "tags": ["face", "fox"], "group": 3},
        {"label": "red apple", "hexcode": "1F34E", "tags": ["apple", "fruit", "red"], "group": 4},
    ]))
    (k / "en" / "messages.json").write_text(json.dumps({"groups": [
        {"key": "animals-nature", "message": "animals & nature", "order": 3},
        {"key": "food-drink", "message": "food & drink", "order": 4}]}))
    dirs["emojibase-data"] = k
    lu = root / "lucide-static"
    (lu / "icons").mkdir(parents=True)
    (lu / "icons" / "circle-dot.svg").write_text(SVG.format(fill="none").replace("/>", ' stroke="currentColor" stroke-width="2"/>'))
    (lu / "tags.json").write_text(json.dumps({"circle-dot": ["target", "point"]}))
    dirs["lucide-static"] = lu
    return dirs


def _build(tmp_path, dirs, **kw):
    logs = []
    kw.setdefault("styles", ["noto", "openmoji"])
    kw.setdefault("icons", ["lucide"])
    m = emoji.build_emoji(tmp_path / "out", package_dirs=dirs, workers=1, log=logs.append, **kw)
    return m, logs


def test_build_writes_images_metadata_manifest_and_card(tmp_path):
    dirs = _fake_packages(tmp_path / "pkgs")
    m, logs = _build(tmp_path, dirs)
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    # the Component entry and the skin-tone variant are left out; the broken SVG is skipped and named
    assert sorted((r["style"], r["name"]) for r in rows) == [
        ("lucide", "circle dot"), ("noto", "fox"), ("noto", "red apple"), ("openmoji", "fox")]
    assert [s["file"].endswith("1F34E.svg") for s in m["skipped"]] == [True]
    assert any("1F34E.svg" in line for line in logs)
    fox = next(r for r in rows if r["style"] == "noto" and r["name"] == "fox")
    assert fox["text"] == "fox (face) in noto style" and fox["category"] == "animals & nature"
    assert fox["licence"].startswith("Apache-2.0") and fox["concept"] == "1F98A"
    img = Image.open(out / fox["file_name"])
    assert img.size == (64, 64) and img.mode == "RGB"
    px = np.asarray(img)
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[32, 32]) == (255, 0, 0)  # composited on white
    orange = np.asarray(Image.open(out / "images/openmoji/1f98a.png"))
    assert tuple(orange[32, 32]) == (255, 136, 0)
    assert m["files"][fox["file_name"]]["sha256"] == emoji._sha256((out / fox["file_name"]).read_bytes())
    card = (out / "README.md").read_text()
    assert "CC-BY-SA-4.0" in card and "Apache-2.0" in card


def test_fluent_style_from_iconify_json(tmp_path):
    """Fluent Emoji Flat ships as Iconify JSON (SVG bodies in icons.json, code points in
    chars.json): each body becomes an SVG file, skin tones are left out, a broken body is skipped
    and named, and the images join the corpus as style "fluent" with the CLDR names."""
    dirs = _fake_packages(tmp_path / "pkgs")
    f = tmp_path / "pkgs" / "fluent"
    f.mkdir()
    body = '<circle cx="16" cy="16" r="10" fill="#00ff00"/>'
    (f / "icons.json").write_text(json.dumps({"prefix": "fluent-emoji-flat", "width": 32, "height": 32, "icons": {
        "fox": {"body": body}, "fox-light": {"body": body}, "red-apple": {"body": "<circle r=broken"}}}))
    (f / "chars.json").write_text(json.dumps({"1f98a": "fox", "1f98a-1f3fb": "fox-light", "1f34e": "red-apple"}))
    dirs["@iconify-json/fluent-emoji-flat"] = f
    m, _ = _build(tmp_path, dirs, styles=["fluent"], icons=[])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert [(r["style"], r["name"], r["concept"], r["text"]) for r in rows] == [("fluent", "fox", "1F98A", "fox (face) in fluent style")]
    assert rows[0]["licence"].startswith("MIT") and [s["file"].endswith("1f34e.svg") for s in m["skipped"]] == [True]
    assert tuple(np.asarray(Image.open(tmp_path / "out" / rows[0]["file_name"]))[32, 32]) == (0, 255, 0)


def test_rebuild_is_idempotent_and_tracks_changes(tmp_path):
    dirs = _fake_packages(tmp_path / "pkgs")
    m1, _ = _build(tmp_path, dirs)
    before = {p: (tmp_path / "out" / p).read_bytes() for p in ("manifest.json", "metadata.jsonl")}
    _, logs = _build(tmp_path, dirs)
    # only the broken file is tried again; the manifest and metadata come out byte-identical
    assert any("1 to rasterise, 4 unchanged" in line for line in logs)
    assert before == {p: (tmp_path / "out" / p).read_bytes() for p in before}
    # a changed source file is rasterised again; a removed source disappears from the folder
    (dirs["openmoji"] / "color" / "svg" / "1F98A.svg").write_text(SVG.format(fill="#0000ff"))
    _, logs = _build(tmp_path, dirs, icons=[])
    assert any("2 to rasterise, 2 unchanged" in line for line in logs)
    assert tuple(np.asarray(Image.open(tmp_path / "out/images/openmoji/1f98a.png"))[32, 32]) == (0, 0, 255)
    assert not (tmp_path / "out/images/lucide").exists() or not list((tmp_path / "out/images/lucide").iterdir())


def test_missing_package_is_reported_and_the_rest_builds(tmp_path):
    dirs = _fake_packages(tmp_path / "pkgs")
    shutil.rmtree(dirs["openmoji"])
    m, logs = _build(tmp_path, dirs)
    assert any(s.get("source") == "openmoji@17.0.0" for s in m["skipped"])
    assert any("openmoji" in line and "warning" in line for line in logs)
    assert {r["style"] for r in map(json.loads, (tmp_path / "out/metadata.jsonl").read_text().splitlines())} == {"noto", "lucide"}


def test_timeout_skips_the_file_and_goes_on(tmp_path):
    good = tmp_path / "a.svg"
    good.write_text(SVG.format(fill="#00ff00"))
    res = emoji.rasterise_many([(str(good), "svg", 32)] * 3, workers=1, timeout=1e-9)
    assert all(png is None and "timed out" in err for png, err in res[:1])
    # with a sane timeout every file comes back
    assert all(png is not None for png, _ in emoji.rasterise_many([(str(good), "svg", 32)] * 3, workers=1))


def test_heldout_cells_are_fixed_and_cover_100_concepts():
    cells = emoji.load_heldout()
    assert len(cells) >= 100 and set(cells.values()) == set(emoji.EMOJI_STYLES)
    it = emoji.Item("twemoji", "1F305", "sunrise", [], "", emoji.HELDOUT_FILE, "png")
    assert cells["1F305"] == "twemoji" and emoji.split_of(it, cells) == "heldout"
    it.style = "noto"
    assert emoji.split_of(it, cells) == "train"


def test_bad_options():
    with pytest.raises(WordpaintError, match="unknown emoji style 'apple'"):
        emoji.build_emoji("unused", styles=["apple"], icons=[])
    with pytest.raises(WordpaintError, match="nothing to build"):
        emoji.build_emoji("unused", styles=[], icons=[])

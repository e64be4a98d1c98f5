"""wordpaint-clip: the contrastive loss, save/load, CLIP-score through torchmetrics, zero-shot
classification, retrieval metrics, and the image-folder reader it trains from."""

import json

import pytest
import torch
from PIL import Image

from wordpaint.data.imagefolder import SkippedFileWarning, load_imagefolder
from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.models.clip import ClipConfig, ClipModel, WordpaintClip
from wordpaint.training.clip import Corpus, evaluate_clip, recall_at
from helpers import fit

TINY = ClipConfig(hidden_dim=32, embed_dim=16, dropout=0.0)


def test_loss_falls_when_pairs_are_learnable():
    torch.manual_seed(0)
    n = 64
    img, txt = torch.randn(n, 1280), torch.randn(n, 384)
    model = ClipModel(TINY)
    batch = {"image_features": img, "text_features": txt}
    first, last = fit(model, lambda step: model(batch), steps=150)
    assert last < 0.2 * first
    # a caption repeated in the batch is a positive for every image that has it (soft targets)
    ids = torch.tensor([0, 0, 1, 2])
    b = {"image_features": img[:4], "text_features": txt[[0, 0, 1, 2]], "text_ids": ids}
    with torch.no_grad():
        logits = model.logit_scale.exp() * model.embed_image_features(b["image_features"]) @ model.embed_text_features(b["text_features"]).T
        target = torch.tensor([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        want = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2
        assert model(b).item() == pytest.approx(want.item(), rel=1e-5)


def test_recall_at():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    r = recall_at(sim, ks=(1, 2))
    assert r == {"recall@1": pytest.approx(2 / 3), "recall@2": 1.0}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "model"
    WordpaintClip(ClipModel(TINY)).save_pretrained(path)
    return WordpaintClip.from_pretrained(path)


def test_retrieval_is_reported_per_kind(clip):
    # emoji held-out cells and icon test names are separate retrieval sets; training rows are in neither
    rows = ([{"kind": "emoji", "split": "heldout"}] * 3 + [{"kind": "icon", "split": "test"}] * 5
            + [{"kind": "emoji", "split": "train"}, {"kind": "icon", "split": "train"}])
    caps = [[f"caption {i}"] for i in range(len(rows))]
    c = Corpus("emoji", [None] * len(rows), caps, [r["split"] for r in rows], rows)
    res = evaluate_clip(clip, [c], {"emoji": torch.randn(len(rows), 1280)})
    assert res["retrieval_heldout"]["pairs"] == 3 and res["retrieval_icons_test"]["pairs"] == 5
    assert 0 <= res["retrieval_icons_test"]["image_to_text"]["recall@1"] <= 1


def test_round_trip_and_scores(clip, tmp_path):
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    s = clip.score(x, ["a red apple", "a fox"])
    assert s.shape == (2,) and (s.abs() <= 100).all()
    clip.save_pretrained(tmp_path / "again")
    again = WordpaintClip.from_pretrained(tmp_path / "again", text_encoder=clip.text_encoder)
    assert torch.equal(again.score(x, ["a red apple", "a fox"]), s)
    # torchmetrics' CLIPScore, fed by wordpaint-clip, gives the mean of the same scores
    metric = clip.clip_score_metric()
    metric.update(list(x), ["a red apple", "a fox"])
    assert metric.compute().item() == pytest.approx(max(s.mean().item(), 0.0), abs=1e-3)
    probs = clip.classify(x, ["apple", "fox", "cat"])
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))


def test_bad_input(clip, tmp_path):
    with pytest.raises(ModelLoadError, match="no wordpaint-clip model"):
        WordpaintClip.from_pretrained(tmp_path / "nothing")
    with pytest.raises(WordpaintError, match="one text per image"):
        clip.score(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ["only one"])
    with pytest.raises(WordpaintError, match="at least one label"):
        clip.classify(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [])


def test_imagefolder_skips_bad_lines_and_files_by_name(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "a.png")  # fully transparent -> white
    (tmp_path / "b.png").write_bytes(b"not a png")
    lines = [{"file_name": "a.png", "text": "a thing"}, {"file_name": "b.png", "text": "broken"},
             {"file_name": "a.png"}, {"file_name": "a.png", "text": "x", "split": "heldout"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n")
    with pytest.warns(SkippedFileWarning) as rec:
        rows, images, skipped = load_imagefolder(tmp_path, size=16, splits=("train",))
    assert [r["text"] for r in rows] == ["a thing"]
    assert images[0].shape == (3, 16, 16) and images[0].min() == 255
    reasons = " | ".join(f"{s['file']}: {s['reason']}" for s in skipped)
    assert "b.png: unreadable image" in reasons and "no text for a.png" in reasons and ":5: not JSON" in reasons
    assert len(rec) == 3
    with pytest.raises(WordpaintError, match="no metadata.jsonl"):
        load_imagefolder(tmp_path / "missing")


def test_concept_accuracy_top1_and_top5_from_ranks():
    from wordpaint.training.clip import concept_style_accuracy

    vocab = [f"c{j}" for j in range(8)]
    names = {c: f"thing {c}" for c in vocab}

    class OneHotClip:  # concept j's text embedding is the j-th unit vector, in every style
        def embed_texts(self, texts):
            return torch.eye(8)[[int(t.split()[1][1:]) for t in texts]]

    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])  # concept j ranks j-th
    images = torch.stack([scores, scores, scores])
    acc = concept_style_accuracy(OneHotClip(), images, ["c0", "c3", "c6"], ["noto"] * 3, vocab, names)
    # c0 ranks first (top-1 and top-5), c3 fourth (top-5 only), c6 seventh (neither)
    assert acc["concept_accuracy"] == pytest.approx(1 / 3) and acc["concept_top5_accuracy"] == pytest.approx(2 / 3)
    # every style's caption embeds alike here, so the judge takes every picture for the first style
    assert acc["style_accuracy"] == 1.0 and acc["style_confusion"] == {"noto": {"noto": 3, "twemoji": 0, "openmoji": 0}}
    acc = concept_style_accuracy(OneHotClip(), images, ["c0", "c3", "c6"], ["twemoji", "twemoji", "noto"], vocab, names)
    assert acc["style_accuracy"] == pytest.approx(1 / 3)
    assert acc["style_confusion"] == {"noto": {"noto": 1, "twemoji": 0, "openmoji": 0}, "twemoji": {"noto": 2, "twemoji": 0, "openmoji": 0}}

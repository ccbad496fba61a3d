import gzip
import json

import pytest
import torch

from lessonlib import data


class CharTok:
    """A stand-in tokenizer: one id per character (enough to test windowing and sampling)."""
    name_or_path = "chars"

    def __len__(self):
        return 256

    def __call__(self, text, add_special_tokens=False, return_attention_mask=False):
        return {"input_ids": [min(ord(c), 255) for c in text]}


def test_speech_splits_are_disjoint_and_cover_all():
    calib, ev = data.load_text("speeches", "calib"), data.load_text("speeches", "eval")
    docs = [t for _, _, t in data._speeches()]
    assert len(docs) == 189
    held = [d for i, d in enumerate(docs) if i % 5 == 4]
    assert all(d in ev for d in held[:5]) and not any(d in calib for d in held[:5] if len(d) > 200)
    assert 0.1 < len(ev) / (len(ev) + len(calib)) < 0.35


def test_unknown_corpus_and_split_name_the_choices():
    with pytest.raises(ValueError, match=r"'tweets'.*speeches"):
        data.load_text("tweets")
    with pytest.raises(ValueError, match=r"'dev'.*calib"):
        data.load_text("speeches", "dev")


def test_windows_drop_the_tail_and_respect_max():
    t = torch.arange(10)
    w = data.windows(t, 3)
    assert w.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert data.windows(t, 3, max_windows=2).shape == (2, 3)
    with pytest.raises(ValueError, match="fewer than one window"):
        data.windows(t, 11)


def test_empty_text_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        data.encode(CharTok(), "   ")


def test_calibration_batches_are_seeded_windows_of_the_calib_split():
    tok = CharTok()
    a = data.calibration_batches(tok, n=4, seqlen=16, seed=1)
    b = data.calibration_batches(tok, n=4, seqlen=16, seed=1)
    c = data.calibration_batches(tok, n=4, seqlen=16, seed=2)
    assert a.shape == (4, 16) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    stream = data.eval_tokens(tok, "speeches", "calib")
    s = stream.unfold(0, 16, 1)
    assert any(torch.equal(s[i], a[0]) for i in range(0, s.shape[0]))


def test_reviews_split_by_movie_and_balanced():
    xtr, ytr = data.load_reviews("train")
    xte, yte = data.load_reviews("test")
    assert 12000 < len(xtr) + len(xte) < 13500
    assert 0.15 < len(xte) / (len(xtr) + len(xte)) < 0.25
    assert 0.45 < ytr.float().mean() < 0.65
    sub, ys = data.load_reviews("train", limit=100, seed=0)
    assert len(sub) == 100 and sub == data.load_reviews("train", limit=100, seed=0)[0]


def test_mnist5k():
    x, y = data.load_mnist5k("train")
    xt, yt = data.load_mnist5k("test")
    assert abs(x.shape[0] - 4000) <= 10 and x.shape[0] + xt.shape[0] == 5000 and x.shape[1] == 784
    assert 0 <= float(x.min()) and float(x.max()) <= 1.0
    assert set(y.unique().tolist()) == set(range(10)) == set(yt.unique().tolist())
    assert torch.equal(y, data.load_mnist5k("train")[1])  # the split is fixed


def test_wikitext2_protocol_on_a_local_file(tmp_path):
    pytest.importorskip("datasets")
    lines = [" = Title = \n", "", " First paragraph of text . \n", " Second one @-@ here . \n"]
    p = tmp_path / "wiki.jsonl"
    p.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    assert data.load_wikitext2("test", path=str(p)) == lines
    assert data.load_text("wikitext2", "eval", path=str(p)) == "\n\n".join(lines)


def test_c4_calibration_protocol_on_a_local_file(tmp_path):
    pytest.importorskip("datasets")
    docs = ["short", "x" * 50, "y" * 80, "tiny"]
    p = tmp_path / "c4-train.json.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(json.dumps({"text": d, "timestamp": "", "url": ""}) for d in docs))
    b = data.calibration_batches(CharTok(), corpus="c4", n=3, seqlen=20, seed=0, path=str(p))
    assert b.shape == (3, 20)
    assert all(set(row.tolist()) <= {ord("x"), ord("y")} for row in b)  # only documents longer than seqlen
    with pytest.raises(ValueError, match="longer than seqlen=100"):
        data.calibration_batches(CharTok(), corpus="c4", n=1, seqlen=100, seed=0, path=str(p))

"""The text task (paper Table 4): masked 1-D SN/CN, TextCNN, IMDb/SST-2/GloVe data, TextTask.

Everything runs on generated corpora in temporary folders (snc.data.text.write_offline_corpora)
and tiny tensors; no network.
"""

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import snc.config  # noqa: F401  (registers the config schemas)
from snc.data.text import (
    BucketLoader,
    EvalLoader,
    Vocab,
    embedding_matrix,
    get_tokenizer,
    load_glove,
    prepare_glove,
    read_imdb,
    read_sst,
    split_train_valid,
    write_offline_corpora,
)
from snc.data.text.imdb import check_archive, prepare_imdb
from snc.data.text.tokenize import basic_tokenize, spacy_available
from snc.errors import ConfigError
from snc.models.text import PARAMS_BT, build_textcnn
from snc.ops import CrossNormController, SelfNorm, channel_stats, cross_norm
from snc.ops.masked import (
    MaskedCrossNorm,
    MaskedSelfNorm,
    masked_channel_stats,
    masked_cross_norm,
    sample_spans,
    span_mask,
)
from snc.ops.options import CrossNormOptions, SelfNormOptions
from snc.tasks.base import RunContext
from snc.tasks.text import TextTask

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
SMALL = ["dataset.generate.train_per_class=60", "dataset.generate.test_per_class=20",
         "dataset.generate.sst_sentences=40", "dataset.generate.neutral=5"]


def padded_batch(lengths=(9, 5, 3, 7), c=6, seed=0):
    """``(x, valid)``: styled sequences with garbage (not zeros) on the padding."""
    g = torch.Generator().manual_seed(seed)
    n, length = len(lengths), max(lengths)
    x = torch.randn(n, c, length, generator=g) * (torch.rand(n, c, 1, generator=g) * 2 + 0.5) \
        + torch.randn(n, c, 1, generator=g) * 3
    valid = torch.arange(length) < torch.tensor(lengths).unsqueeze(1)
    x = torch.where(valid.unsqueeze(1), x, torch.full_like(x, 50.0))
    return x, valid


def compose_cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[
            f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}",
            "device=cpu", "logger=none", *overrides])


# ------------------------------------------------------------------ masked ops


def test_masked_stats_equal_channel_stats_without_padding_and_skip_padding():
    x, valid = padded_batch()
    m0, s0 = masked_channel_stats(x, None, 1e-5)
    m1, s1 = masked_channel_stats(x, torch.ones_like(valid), 1e-5)
    m2, s2 = channel_stats(x, 1e-5)
    assert torch.allclose(m0, m2) and torch.allclose(m1, m2, atol=1e-5)
    assert torch.allclose(s1, s2, atol=1e-5)
    mean, std = masked_channel_stats(x, valid, 1e-5)
    for i, n in enumerate(valid.sum(1).tolist()):  # each sample = its unpadded statistics
        mi, si = channel_stats(x[i: i + 1, :, :n], 1e-5)
        assert torch.allclose(mean[i], mi[0], atol=1e-5)
        assert torch.allclose(std[i], si[0], atol=1e-5)
    one = masked_channel_stats(x[:1, :, :1], torch.ones(1, 1, dtype=torch.bool), 1e-5)[1]
    assert torch.allclose(one, torch.full_like(one, 1e-5 ** 0.5))  # single token: sqrt(eps)
    with pytest.raises(ValueError, match="no valid position"):
        masked_channel_stats(x, torch.zeros_like(valid), 1e-5)


def test_masked_cross_norm_unmasked_equals_official_and_masked_restyles_tokens_only():
    x, valid = padded_batch()
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(masked_cross_norm(x, None, perm=perm), cross_norm(x, perm=perm),
                          atol=1e-5)
    out = masked_cross_norm(x, valid, perm=perm)
    assert torch.equal(out[~valid.unsqueeze(1).expand_as(x)], x[~valid.unsqueeze(1).expand_as(x)])
    mean, std = masked_channel_stats(out, valid, 1e-5)
    ref_mean, ref_std = masked_channel_stats(x, valid, 1e-5)
    assert torch.allclose(mean, ref_mean[perm], atol=1e-4)
    assert torch.allclose(std, ref_std[perm], atol=1e-3)
    x.requires_grad_(True)
    masked_cross_norm(x, valid, perm=perm).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_token_spans_lie_inside_each_review_above_threshold():
    lengths = torch.tensor([1, 2, 5, 40, 300, 17])
    for beta in (1.0, 0.5):
        g = torch.Generator().manual_seed(3)
        start, stop = sample_spans(lengths, g, beta=beta, threshold=0.1)
        assert (start >= 0).all() and (stop <= lengths).all()
        assert start[0] == 0 and stop[0] == 1  # no span > t can be drawn in 1 or 2 tokens:
        assert start[1] == 0 and stop[1] == 2  # the whole review
        assert (((stop - start).float() / lengths.float()) > 0.1).all()
        again = sample_spans(lengths, torch.Generator().manual_seed(3), beta=beta)
        assert torch.equal(again[0], start) and torch.equal(again[1], stop)
    mask = span_mask(torch.tensor([1, 0]), torch.tensor([3, 2]), 4)
    assert mask.tolist() == [[False, True, True, False], [True, True, False, False]]


def test_span_crops_content_changes_only_the_span_style_reads_the_partners_span():
    x, valid = padded_batch()
    perm = torch.tensor([1, 2, 3, 0])
    content = span_mask(torch.tensor([2, 1, 0, 3]), torch.tensor([6, 4, 2, 7]), x.shape[-1])
    out = masked_cross_norm(x, valid, perm=perm, content_span=content)
    outside = ~(content & valid).unsqueeze(1).expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert not torch.allclose(out, x)
    style = span_mask(torch.tensor([0, 1, 0, 2]), torch.tensor([4, 5, 3, 6]), x.shape[-1])
    out = masked_cross_norm(x, valid, perm=perm, style_span=style)
    mean, _ = masked_channel_stats(out, valid, 1e-5)
    partner_mean, _ = masked_channel_stats(x, style & valid, 1e-5)
    assert torch.allclose(mean, partner_mean[perm], atol=1e-4)


def test_masked_units_selfnorm_equals_official_without_mask_and_cn_follows_controller():
    torch.manual_seed(0)
    x, valid = padded_batch()
    sn, ref = MaskedSelfNorm(6), SelfNorm(6)
    ref.load_state_dict(sn.state_dict())
    assert torch.allclose(sn(x), ref(x), atol=1e-6)
    sn.eval()
    out = sn(x, valid)
    assert torch.equal(out[~valid.unsqueeze(1).expand_as(x)], x[~valid.unsqueeze(1).expand_as(x)])
    for i, n in enumerate(valid.sum(1).tolist()):  # eval: per review = SN on the unpadded review
        assert torch.allclose(out[i, :, :n], sn(x[i: i + 1, :, :n])[0], atol=1e-5)
    sn.train()
    sn(x, valid).sum().backward()
    assert sn.g_fc.weight.grad is not None
    cn = MaskedCrossNorm(CrossNormOptions(crop="both"))
    ctrl = CrossNormController([cn], prob=1.0, seed=0)
    assert torch.equal(cn(x, valid), x)  # inactive
    with ctrl.step() as on:
        assert on and not torch.equal(cn(x, valid), x)
    cn.eval()
    with ctrl.activate():
        assert torch.equal(cn(x, valid), x)  # eval: identity
    one = MaskedCrossNorm(CrossNormOptions(mode="one_instance", crop="content"))
    one.active = True
    out = one(x, valid)  # channels of one review exchange statistics; padding untouched
    assert torch.equal(out[~valid.unsqueeze(1).expand_as(x)], x[~valid.unsqueeze(1).expand_as(x)])


# ------------------------------------------------------------------ model


def test_textcnn_parameter_count_and_units():
    assert sum(p.numel() for p in build_textcnn(25_002).parameters()) == PARAMS_BT == 2_620_801
    model = build_textcnn(25_002, sn=SelfNormOptions(), cn=CrossNormOptions(crop="both"))
    assert sum(p.numel() for p in model.parameters()) == PARAMS_BT + 400  # one-gate SN on 100
    assert len(model.cn_controller) == 1
    with pytest.raises(ValueError, match="active_num=1"):
        build_textcnn(100, cn=CrossNormOptions(active_num=2))


def test_textcnn_forward_short_inputs_and_padding_mask():
    torch.manual_seed(0)
    kw = dict(sn=SelfNormOptions(), cn=CrossNormOptions(crop="both", prob=1.0),
              embedding_dim=8, n_filters=4)
    masked = build_textcnn(50, **kw)
    unmasked = build_textcnn(50, mask_padding=False, **kw)
    unmasked.load_state_dict(masked.state_dict())
    masked.eval()
    unmasked.eval()
    assert masked(torch.tensor([[5, 6]])).shape == (1,)  # padded up to the widest filter
    tokens = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 1, 1, 1]])
    full = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    assert torch.allclose(masked(full), unmasked(full))  # no padding: same statistics
    assert not torch.allclose(masked(tokens)[1], unmasked(tokens)[1])  # padding counted or not
    masked.train()
    with masked.cn_controller.step():
        loss = masked(tokens).sum()
    loss.backward()
    assert masked.embedding.weight.grad[1].abs().sum() == 0  # <pad> row frozen


# ------------------------------------------------------------------ data


def test_offline_corpora_in_published_layouts_with_a_shift(tmp_path):
    root = write_offline_corpora(tmp_path, train_per_class=30, test_per_class=10,
                                 sst_sentences=20, neutral=4)
    assert len(list((root / "aclImdb/train/pos").glob("*_*.txt"))) == 30
    train = read_imdb(root / "aclImdb", "train")
    assert len(train) == 60 and train.labels.sum() == 30 and "<br />" in train.texts[0]
    sst = read_sst(root / "sst/trees/test.txt")
    assert len(sst) == 20 and sst.skipped["neutral"] == 4
    tok = get_tokenizer("auto")
    src = np.mean([len(t) for t in tok(train.texts)])
    tgt = np.mean([len(t) for t in tok(sst.texts)])
    assert src > 5 * tgt  # long reviews vs short sentences
    assert write_offline_corpora(tmp_path, train_per_class=30, test_per_class=10,
                                 sst_sentences=20, neutral=4) == root  # same params: kept
    write_offline_corpora(tmp_path, train_per_class=20, test_per_class=10, sst_sentences=20,
                          neutral=4)
    assert len(read_imdb(root / "aclImdb", "train")) == 40  # regenerated without stale files
    with pytest.raises(FileExistsError):
        (tmp_path / "other/aclImdb").mkdir(parents=True)
        write_offline_corpora(tmp_path / "other")


def test_sst_formats_and_glue_test_refused(tmp_path):
    trees = tmp_path / "test.txt"
    trees.write_text("(4 (2 A) (4 (2 -LRB-) (4 (3 good) (4 (2 -RRB-) (2 film)))))\n"
                     "(2 (2 So) (2 so))\n"
                     "(1 (2 Not) (1 (1 great)))\n")
    sst = read_sst(trees)
    assert sst.texts == ["A ( good ) film", "Not great"] and sst.labels.tolist() == [1.0, 0.0]
    quoted = "(3 (2 (2 It) (2 's)) (3 (2 ``) (3 (3 fun) (2 ''))))"
    trees.write_text(quoted + "\n")
    assert read_sst(trees).texts == ['It \'s " fun "']  # PTB quotes undone
    archive = tmp_path / "trainDevTestTrees_PTB.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # read in place from the published archive
        zf.writestr("trainDevTestTrees_PTB/trees/test.txt", trees.read_text())
    assert read_sst(archive).texts == ['It \'s " fun "']
    tsv = tmp_path / "sentiment-test"
    tsv.write_text("sentence\tlabel\nit is fine .\t1\nit is not .\t0\n")
    assert read_sst(tsv).labels.tolist() == [1.0, 0.0]
    glue = tmp_path / "glue_test.tsv"
    glue.write_text("index\tsentence\n0\tuneasy mishmash of styles\n")
    with pytest.raises(ConfigError, match="unlabelled"):
        read_sst(glue)
    hf = tmp_path / "hf.tsv"
    hf.write_text("uneasy mishmash\t-1\n")
    with pytest.raises(ConfigError, match="unlabelled"):
        read_sst(hf)
    with pytest.raises(ConfigError, match="1,821-sentence SST-2 test split"):
        read_sst(tmp_path / "missing.txt")


def test_imdb_missing_bad_bytes_empty_reviews_and_checksum(tmp_path):
    with pytest.raises(ConfigError, match=r"aclImdb/\{train,test\}/\{pos,neg\}/\*\.txt"):
        read_imdb(tmp_path / "aclImdb", "train")
    with pytest.raises(ConfigError, match="aclImdb_v1.tar.gz"):
        prepare_imdb(tmp_path, download=False)
    for sub in ("pos", "neg"):
        (tmp_path / "aclImdb/train" / sub).mkdir(parents=True)
        (tmp_path / f"aclImdb/train/{sub}/0_{8 if sub == 'pos' else 2}.txt").write_text("Fine.")
    (tmp_path / "aclImdb/train/pos/1_9.txt").write_text("   \n")
    (tmp_path / "aclImdb/train/neg/1_1.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ConfigError, match="1_1.txt is not valid UTF-8"):
        read_imdb(tmp_path / "aclImdb", "train")
    split = read_imdb(tmp_path / "aclImdb", "train", bad_files="skip")
    assert len(split) == 2 and split.skipped == {"empty": 1, "not_utf8": 1}
    # a truncated archive fails its checksum; an intact one unpacks into the layout
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "aclImdb", arcname="aclImdb")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    archive = fresh / "aclImdb_v1.tar.gz"
    archive.write_bytes(buf.getvalue())
    import hashlib

    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    check_archive(archive, md5)
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        check_archive(archive)  # not the published archive
    archive.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        check_archive(archive, md5)
    archive.write_bytes(buf.getvalue())
    (tmp_path / "aclImdb/test/pos").mkdir(parents=True)  # prepare_imdb wants both splits
    (tmp_path / "aclImdb/test/neg").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "aclImdb", arcname="aclImdb")
    archive.write_bytes(buf.getvalue())
    root = prepare_imdb(fresh, md5=hashlib.md5(buf.getvalue()).hexdigest(), download=False)
    assert (root / "train/pos/0_8.txt").read_text() == "Fine."


def test_split_sizes_match_the_tutorial():
    train, valid = split_train_valid(25_000, 0.3, 1234)
    assert len(train) == 17_500 and len(valid) == 7_500
    assert not set(train) & set(valid)
    assert np.array_equal(split_train_valid(25_000, 0.3, 1234)[1], valid)
    with pytest.raises(ConfigError, match="valid_fraction"):
        split_train_valid(10, 1.5, 0)


def test_glove_parse_cache_memmap_width_and_checksum(tmp_path):
    path = tmp_path / "vectors.3d.txt"
    path.write_text("the 0.1 0.2 0.3\ngood 1 2 3\n. -1 -2 -3\n")
    first = load_glove(path, 3, md5=None)
    assert not first.from_cache and first.words == ["the", "good", "."]
    assert (tmp_path / "vectors.3d.npy").exists()
    second = load_glove(path, 3, md5=None)
    assert second.from_cache and isinstance(second.vectors, np.memmap)
    assert np.array_equal(np.asarray(second.vectors), first.vectors)
    with pytest.raises(ConfigError, match="has 3 values after the token, expected .*glove_dim=4"):
        load_glove(path, 4, md5=None)
    path.write_text("the 0.1 0.2 0.3\ngood 1 2\n")
    with pytest.raises(ConfigError, match=r"vectors.3d.txt:2 has 2 values"):
        load_glove(path, 3, md5=None)  # changed file: parsed again, not read from the cache
    path.write_text("the 0.1 0.2 0.3\n")
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        load_glove(path, 3, md5="0" * 32)
    with pytest.raises(ConfigError, match="glove.6B.zip"):
        load_glove(tmp_path / "glove.6B.100d.txt", 100)
    with zipfile.ZipFile(tmp_path / "glove.6B.zip", "w") as zf:
        zf.writestr("glove.6B.100d.txt", "good " + " ".join(["0.5"] * 100) + "\n")
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        prepare_glove(tmp_path, download=False)  # not the published zip
    extracted = prepare_glove(tmp_path, md5=None, download=False)
    assert load_glove(extracted, 100, md5=None).words == ["good"]


def test_vocab_order_specials_and_small_corpus():
    vocab = Vocab.build([["b", "a", "c", "a"], ["c", "B", "a"]], max_size=3)
    assert vocab.itos == ["<unk>", "<pad>", "a", "c", "B"]  # freq desc, ties in string order
    assert vocab.encode(["a", "zzz"]).tolist() == [2, 0]
    small = Vocab.build([["x", "y"]], max_size=25_000)  # larger than the corpus: all kept
    assert len(small) == 4


def test_glove_lookup_is_case_sensitive_with_normal_misses(tmp_path):
    path = tmp_path / "g.2d.txt"
    path.write_text("good 1 2\nbad -1 -2\n")
    glove = load_glove(path, 2, md5=None)
    itos = ["<unk>", "<pad>", "good", "Good", "bad"]
    weights, hits = embedding_matrix(itos, glove, torch.Generator().manual_seed(0))
    assert hits == 2
    assert weights[2].tolist() == [1.0, 2.0] and weights[4].tolist() == [-1.0, -2.0]
    assert weights[0].abs().sum() == 0 and weights[1].abs().sum() == 0
    assert weights[3].abs().sum() > 0  # "Good" misses the lower-cased GloVe: N(0, 1)
    again, _ = embedding_matrix(itos, glove, torch.Generator().manual_seed(0))
    assert torch.equal(again, weights)


def test_tokenizers_keep_case_and_split_clitics():
    text = "This movie wasn't GOOD, (really)!"
    expected = ["This", "movie", "was", "n't", "GOOD", ",", "(", "really", ")", "!"]
    assert basic_tokenize([text])[0] == expected
    if spacy_available():
        assert get_tokenizer("spacy")([text])[0] == expected
    else:
        with pytest.raises(ConfigError, match="tokenizer=basic"):
            get_tokenizer("spacy")
    with pytest.raises(ConfigError, match="choose one of"):
        get_tokenizer("nltk")


def test_bucket_loader_buckets_covers_and_resumes_bit_identically():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, 50, size=int(n)).astype(np.int32) for n in rng.integers(1, 60, 201)]
    labels = rng.integers(0, 2, 201).astype(np.float32)
    loader = BucketLoader(seqs, labels, batch_size=8, pad_idx=1, min_length=5, seed=3,
                          pool_factor=4)
    batches = list(loader)
    assert len(batches) == len(loader) == 25  # 201 = 25 * 8 + 1: the single one is merged
    assert min(b[0].shape[0] for b in batches) >= 2
    assert sum(b[0].shape[0] for b in batches) == 201
    assert min(b[0].shape[1] for b in batches) >= 5
    padding = sum(int((b[0] == 1).sum()) for b in batches)
    shuffled = EvalLoader(seqs, labels, 8, 1, 5)
    assert padding < 0.5 * sum(b[0].numel() for b in batches)  # bucketing keeps padding low
    assert sum(b[0].shape[0] for b in shuffled) == 201
    # resume: stop after 7 batches of epoch 2, restore into a fresh loader, compare the rest
    ref = BucketLoader(seqs, labels, 8, 1, 5, seed=3, pool_factor=4)
    list(ref)
    epoch2 = list(ref)
    run = BucketLoader(seqs, labels, 8, 1, 5, seed=3, pool_factor=4)
    list(run)
    it = iter(run)
    head = [next(it) for _ in range(7)]
    state = run.state_dict()
    resumed = BucketLoader(seqs, labels, 8, 1, 5, seed=99, pool_factor=4)
    resumed.load_state_dict(state)
    tail = list(resumed)
    for a, b in zip(head + tail, epoch2, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    later = zip(list(resumed), list(ref), strict=True)  # and the epochs after it as well
    assert all(torch.equal(a[0], b[0]) for a, b in later)


# ------------------------------------------------------------------ task


def test_task_config_errors_name_the_fix(tmp_path):
    base = ["task=text", "backbone=textcnn", "dataset=text_synthetic"]
    TextTask(compose_cfg(tmp_path, *base, "sn=on", "cn=on", "crop=both"))
    with pytest.raises(ConfigError, match="cn.active_num=1"):
        TextTask(compose_cfg(tmp_path, *base, "cn=on", "cn.active_num=2"))
    with pytest.raises(ConfigError, match="position=default"):
        TextTask(compose_cfg(tmp_path, *base, "sn=on", "position=post_addition"))
    with pytest.raises(ConfigError, match="unknown dataset option"):
        TextTask(compose_cfg(tmp_path, *base, "+dataset.num_train=5"))
    with pytest.raises(ConfigError, match="glove_dim"):
        TextTask(compose_cfg(tmp_path, *base, "dataset.glove_dim=50"))
    with pytest.raises(ConfigError, match="bad_files"):
        TextTask(compose_cfg(tmp_path, *base, "dataset.bad_files=ignore"))


@pytest.mark.parametrize("experiment", ["table4_baseline", "table4_sn", "table4_cn",
                                        "table4_sncn", "text_demo"])
def test_presets_compose_and_validate(tmp_path, experiment):
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    task = TextTask(cfg)
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 1e-3
    assert cfg.batch_size == 64 and cfg.eval_every == 1
    assert task.monitor == ("val/loss", "min")
    if experiment.startswith("table4"):
        assert cfg.epochs == 20 and cfg.dataset.name == "imdb_sst2"
        assert task.method() == {"baseline": "basic"}.get(experiment[7:], experiment[7:])


@pytest.mark.parametrize("mask", [True, False])
def test_task_trains_evaluates_and_resumes(tmp_path, mask):
    cfg = compose_cfg(tmp_path, "task=text", "backbone=textcnn", "dataset=text_synthetic",
                      "sn=on", "cn=on",
                      "crop=both", "cn.prob=0.5", "batch_size=16", f"task.mask_padding={mask}",
                      "task.n_filters=16", *SMALL)
    task = TextTask(cfg)
    task.setup(RunContext(device=torch.device("cpu"), run_dir=tmp_path / "run", seed=1))
    assert task.info["sizes"] == {"train": 84, "val": 36, "source": 40, "target": 40}
    assert task.info["vocab_rows"] < 25_002  # vocab_size larger than the corpus: all kept
    assert task.info["glove_hits"] > 0 and not task.info["glove_from_cache"]
    model = task.model
    model.train()
    batch = next(iter(task.train))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss, logs = task.training_step(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        assert set(logs) == {"loss", "accuracy", "cn"}
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    periodic = task.evaluate(model)
    assert set(periodic) == {"val/loss", "val/accuracy"} and model.training
    best = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        loss, _ = task.training_step(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    results = task.final_evaluate(model, best)
    for key in ("source/accuracy", "target/accuracy", "source/accuracy_last",
                "target/accuracy_last"):
        assert 0.0 <= results[key] <= 100.0
        assert abs(results[key] * 40 / 100 - round(results[key] * 40 / 100)) < 1e-9  # per sample
    assert results["checkpoint"] == "best_val_loss"
    assert results["val/loss"] == pytest.approx(periodic["val/loss"])  # best state re-loaded
    last_only = task.final_evaluate(model, None)
    assert last_only["source/accuracy"] == results["source/accuracy_last"]
    assert "IMDb" in task.summary(results)
    # the loader resumes mid-epoch bit-identically; task state guards the data identity
    it = iter(task.train)
    next(it)
    state = task.train.state_dict()
    expected = [b[0] for b in it]
    task.train.load_state_dict(state)
    assert all(torch.equal(a[0], b) for a, b in zip(task.train, expected, strict=True))
    task.load_state_dict(task.state_dict())
    with pytest.raises(ConfigError, match="other text data"):
        task.load_state_dict({"valid_digest": "x", "vocab_rows": 1})
    second = TextTask(cfg)  # the GloVe cache is used the second time
    second.setup(RunContext(device=torch.device("cpu"), run_dir=tmp_path / "run2", seed=1))
    assert second.info["glove_from_cache"]
    for a, b in zip(second.model.state_dict().values(), fresh_state(cfg, tmp_path),
                    strict=True):
        assert torch.equal(a, b)  # setup is deterministic for a seed


def fresh_state(cfg, tmp_path):
    task = TextTask(cfg)
    task.setup(RunContext(device=torch.device("cpu"), run_dir=tmp_path / "run3", seed=1))
    return list(task.model.state_dict().values())


def test_engine_run_resumes_bit_identically(tmp_path, monkeypatch):
    """Through snc.engine.run: a run killed after epoch 1 and relaunched equals an unbroken one."""
    from snc.engine import run

    def cfg(out):
        return compose_cfg(tmp_path, "experiment=text_demo", "progress=false", "epochs=2",
                           "batch_size=16", "task.n_filters=8", *SMALL,
                           f"paths.output_dir={tmp_path / out}")

    reference = run(cfg("ref"))
    original = TextTask.evaluate
    calls = []

    def killed_in_epoch_2(self, model):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, model)

    monkeypatch.setattr(TextTask, "evaluate", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg("resumed"))
    monkeypatch.setattr(TextTask, "evaluate", original)
    resumed = run(cfg("resumed"))
    keys = [k for k in reference if k.startswith(("source/", "target/", "val/", "best/"))]
    assert len(keys) >= 12 and reference["backbone"] == "textcnn"
    assert {k: resumed[k] for k in keys} == {k: reference[k] for k in keys}
    assert resumed["train/final_epoch_loss"] == reference["train/final_epoch_loss"]

"""Text task (paper Table 4): sentiment on IMDb (source) -> SST-2 (target), GloVe + TextCNN.

Recipe (paper Sec. 4.3, the tutorial it follows: bentrevett/pytorch-sentiment-analysis, notebook 4):

1. Read IMDb train/test and the labelled 1,821-sentence SST-2 test split; split the 25k IMDb
   training reviews 17,500 / 7,500 (train / validation) with ``dataset.split_seed``.
2. Tokenise with spaCy's English rules, no lower-casing; build the vocabulary on the 17,500
   training reviews: the 25,000 most frequent tokens + ``<unk>``, ``<pad>``.
3. Initialise the embedding from GloVe 6B 100d (case-sensitive lookup, misses N(0, 1),
   ``<unk>``/``<pad>`` zero); the embedding stays trainable.
4. TextCNN with the SN/CN site between the embedding and the convolutions (``sn=on``,
   ``cn=on``), statistics per review and embedding dimension over its tokens, padding masked
   (``task.mask_padding``).
5. The engine trains (Adam 1e-3, BCE with logits, batch 64 bucketed by length, 20 epochs; the
   presets set these), evaluates the validation split every epoch and keeps the checkpoint with
   the lowest validation loss (``monitor``).
6. ``final_evaluate``: accuracy over samples on IMDb test (``source/``) and SST-2
   (``target/``), for the best-validation checkpoint (``.../accuracy``) and the last one
   (``.../accuracy_last``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from snc.data.text.glove import embedding_matrix, load_glove
from snc.data.text.imdb import HOW_TO_GET as IMDB_HOW_TO_GET
from snc.data.text.imdb import TextSplit, prepare_imdb, read_imdb, split_train_valid
from snc.data.text.loader import BucketLoader, EvalLoader
from snc.data.text.offline import write_offline_corpora
from snc.data.text.sst import read_sst
from snc.data.text.tokenize import get_tokenizer, tokenizer_name
from snc.data.text.vocab import Vocab
from snc.distributed import barrier
from snc.errors import ConfigError
from snc.models.text import build_textcnn
from snc.ops.options import SelfNormOptions
from snc.tasks.base import Logs, RunContext, Task, register_task

log = logging.getLogger("snc")

TASK_KEYS = {"name", "mask_padding", "embedding_dim", "n_filters", "filter_sizes", "dropout"}
DATASET_KEYS = {"name", "imdb_dir", "sst_path", "glove_path", "glove_dim", "glove_md5",
                "glove_cache", "vocab_size", "valid_fraction", "split_seed", "tokenizer",
                "bad_files", "download", "epochs", "generate"}
POSITIONS = (None, "embedding")


def _check_keys(node: DictConfig, known: set, group: str) -> None:
    unknown = sorted(set(node.keys()) - known)
    if unknown:
        raise ConfigError(f"unknown {group} option(s) {', '.join(unknown)} for task=text; "
                          f"known: {', '.join(sorted(known))}")


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def binary_metrics(model: nn.Module, loader: EvalLoader, device: torch.device
                   ) -> Dict[str, float]:
    """Mean BCE loss and accuracy summed over samples (not a mean of batch means).

    The model is put in eval mode and returned to its previous mode.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for tokens, labels in loader:
            tokens, labels = tokens.to(device), labels.to(device)
            logits = model(tokens).float()
            loss_sum += float(F.binary_cross_entropy_with_logits(logits, labels,
                                                                 reduction="sum"))
            correct += int(((logits > 0).float() == labels).sum())
            count += labels.numel()
    finally:
        model.train(was_training)
    if count != loader.num_samples:
        raise RuntimeError(f"evaluated {count} samples of {loader.num_samples}")
    return {"loss": loss_sum / count, "accuracy": 100.0 * correct / count}


@register_task("text")
class TextTask(Task):
    """IMDb -> SST-2 sentiment with GloVe + TextCNN (module docstring)."""

    monitor: Optional[Tuple[str, str]] = ("val/loss", "min")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        task, data = cfg.task, cfg.dataset
        _check_keys(task, TASK_KEYS, "task")
        _check_keys(data, DATASET_KEYS, "dataset")
        if cfg.backbone.name != "textcnn":
            raise ConfigError(f"task=text trains GloVe + TextCNN, not backbone="
                              f"{cfg.backbone.name}: add backbone=textcnn (the table4_* and "
                              "text_demo presets set it)")
        sn, placement = self.units.sn, self.units.placement
        if placement.name not in POSITIONS or placement.sn not in POSITIONS or \
                placement.cn not in POSITIONS:
            raise ConfigError("task=text has one unit site, between the embedding and the "
                              "convolutions: use position=default (or position.name=embedding)")
        if placement.blocks != "all":
            raise ConfigError("task=text has no blocks to choose: leave position.blocks=all")
        if sn is not None and not isinstance(sn, SelfNormOptions):
            raise ConfigError("task=text supports sn=on or sn=off (no SE variant)")
        sizes = list(task.filter_sizes)
        if not sizes or min(int(s) for s in sizes) < 1:
            raise ConfigError(f"task.filter_sizes={sizes}; give positive widths, e.g. [3, 4, 5]")
        if int(cfg.batch_size) < 2:
            raise ConfigError(f"batch_size={cfg.batch_size}; training needs >= 2 (SelfNorm's "
                              "gate and CrossNorm pair reviews within a batch)")
        if int(data.vocab_size) < 1:
            raise ConfigError(f"dataset.vocab_size={data.vocab_size}; use e.g. 25000")
        if int(data.glove_dim) != int(task.embedding_dim):
            raise ConfigError(f"dataset.glove_dim={data.glove_dim} but task.embedding_dim="
                              f"{task.embedding_dim}; the GloVe width is the embedding width")
        if str(data.bad_files) not in ("error", "skip"):
            raise ConfigError(f"dataset.bad_files={data.bad_files!r}; choose error or skip")
        get_tokenizer(str(data.tokenizer))  # fails early when spaCy is asked for but missing
        self.device = torch.device("cpu")
        self.check_model()

    # ----- identity --------------------------------------------------------------------------
    def run_name(self) -> str:
        name = f"{self.cfg.dataset.name}-textcnn-{self.method()}"
        if not bool(self.cfg.task.mask_padding) and (self.units.sn or self.units.cn):
            name += "-unmasked"
        return name

    # ----- data ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Writes the generated corpora (``dataset.generate``) or downloads a missing IMDb
        (``dataset.download``). Rank 0 only; the others wait at a barrier in :meth:`setup`."""
        data = self.cfg.dataset
        if data.get("generate") is not None:
            gen = OmegaConf.to_container(data.generate, resolve=True)
            write_offline_corpora(Path(gen.pop("root")), **gen)
        imdb = Path(data.imdb_dir)
        if not (imdb / "train").is_dir() and bool(data.download):
            if imdb.name != "aclImdb":
                raise ConfigError(f"dataset.imdb_dir={imdb} is missing; the download unpacks "
                                  "into <folder>/aclImdb, so set imdb_dir to such a path")
            try:
                prepare_imdb(imdb.parent)
            except OSError as err:
                raise ConfigError(f"could not download IMDb into {imdb.parent} ({err}). "
                                  f"{IMDB_HOW_TO_GET}") from None

    def _read(self) -> Dict[str, TextSplit]:
        imdb, sst = Path(self.cfg.dataset.imdb_dir), Path(self.cfg.dataset.sst_path)
        bad = str(self.cfg.dataset.bad_files)
        return {"imdb_train": read_imdb(imdb, "train", bad_files=bad),
                "imdb_test": read_imdb(imdb, "test", bad_files=bad),
                "sst": read_sst(sst)}

    def build_data(self, seed: int) -> Dict[str, Any]:
        """Reads, splits, tokenises and encodes every split; builds the vocabulary and the
        initial embedding. Returns a dict of encoded splits plus ``vocab``, ``embeddings``
        and ``info``.

        The training reviews are tokenised first (the vocabulary needs their counts); the
        other splits are tokenised and encoded chunk by chunk, so only one split's token
        strings are held at a time (IMDb: ~6.7M tokens per split).
        """
        data = self.cfg.dataset
        splits = self._read()
        tokenize = get_tokenizer(str(data.tokenizer))
        full = splits["imdb_train"]
        train_idx, valid_idx = split_train_valid(len(full), float(data.valid_fraction),
                                                 int(data.split_seed))
        full_tokens = tokenize(full.texts)
        vocab = Vocab.build((full_tokens[i] for i in train_idx), int(data.vocab_size))
        encoded: Dict[str, Tuple[List[np.ndarray], np.ndarray]] = {}
        no_tokens: Dict[str, int] = {}

        def encode(name: str, token_lists, labels: np.ndarray) -> None:
            seqs, keep = [], []
            for i, tokens in enumerate(token_lists):
                if tokens:
                    seqs.append(vocab.encode(tokens))
                    keep.append(i)
            no_tokens[name] = len(labels) - len(keep)
            if no_tokens[name]:
                log.warning("%s: skipped %d texts without tokens", name, no_tokens[name])
            if not keep:
                raise ConfigError(f"{name}: no text has a token")
            encoded[name] = (seqs, np.asarray(labels)[keep])

        def chunked(texts: List[str], size: int = 2000):
            for start in range(0, len(texts), size):
                yield from tokenize(texts[start: start + size])

        encode("train", (full_tokens[i] for i in train_idx), full.labels[train_idx])
        encode("val", (full_tokens[i] for i in valid_idx), full.labels[valid_idx])
        del full_tokens
        encode("source", chunked(splits["imdb_test"].texts), splits["imdb_test"].labels)
        encode("target", chunked(splits["sst"].texts), splits["sst"].labels)
        glove = load_glove(Path(data.glove_path), int(data.glove_dim),
                           md5=data.get("glove_md5", "auto"),
                           cache=bool(data.get("glove_cache", True)))
        generator = torch.Generator().manual_seed(int(seed))
        embeddings, hits = embedding_matrix(vocab.itos, glove, generator)
        info = {
            "tokenizer": tokenizer_name(str(data.tokenizer)),
            "vocab_rows": len(vocab),
            "glove_hits": hits,
            "glove_from_cache": glove.from_cache,
            "glove_load_seconds": round(glove.seconds, 3),
            "sizes": {k: len(v[0]) for k, v in encoded.items()},
            "skipped": {"imdb_train": full.skipped, "imdb_test": splits["imdb_test"].skipped,
                        "sst": splits["sst"].skipped, "no_tokens": no_tokens},
            "split_seed": int(data.split_seed),
            "valid_digest": _digest(valid_idx),
            "sources": {k: v.source for k, v in splits.items()},
        }
        return {"encoded": encoded, "vocab": vocab, "embeddings": embeddings, "info": info}

    # ----- building --------------------------------------------------------------------------
    def build_model(self, *, pretrained: bool = True, vocab: Optional[Vocab] = None,
                    embeddings: Optional[torch.Tensor] = None, seed: int = 0) -> nn.Module:
        """TextCNN with the units of ``self.units`` over ``vocab`` (the structure check: a
        ``dataset.vocab_size``-row embedding), its embedding loaded from ``embeddings`` (GloVe)
        unless ``pretrained=False``; ``seed`` seeds the CN controller."""
        task = self.cfg.task
        size, pad = ((len(vocab), vocab.pad_idx) if vocab is not None
                     else (int(self.cfg.dataset.vocab_size), 1))
        return build_textcnn(
            size, pad, sn=self.units.sn, cn=self.units.cn, mask_padding=bool(task.mask_padding),
            embeddings=embeddings if pretrained else None, seed=seed,
            embedding_dim=int(task.embedding_dim), n_filters=int(task.n_filters),
            filter_sizes=tuple(int(s) for s in task.filter_sizes), dropout=float(task.dropout))

    def setup(self, ctx: RunContext) -> None:
        task = self.cfg.task
        self.device = ctx.device
        if ctx.is_main:
            self.prepare()
        barrier()
        # one seed, separate streams: embedding misses, model init, batch order, CN draws
        seeds = [int(v) for v in np.random.SeedSequence([int(ctx.seed), 4]).generate_state(4)]
        built = self.build_data(seeds[0])
        vocab, encoded = built["vocab"], built["encoded"]
        min_length = max(int(s) for s in task.filter_sizes)
        with torch.random.fork_rng(devices=[]):  # model init independent of the caller's RNG
            torch.manual_seed(seeds[1])
            model = self.build_model(vocab=vocab, embeddings=built["embeddings"], seed=seeds[3])
        self.model = model.to(ctx.device)
        seqs, labels = encoded["train"]
        # DDP: rank-strided shards of equal size (equal batch counts, no rank waits on another)
        per_rank = len(seqs) // ctx.world
        self.train = BucketLoader(seqs[ctx.rank::ctx.world][:per_rank],
                                  labels[ctx.rank::ctx.world][:per_rank],
                                  int(self.cfg.batch_size), vocab.pad_idx, min_length,
                                  seed=seeds[2])
        eval_batch = int(self.cfg.eval_batch_size)
        self.eval_loaders = {name: EvalLoader(*encoded[name], eval_batch, vocab.pad_idx,
                                              min_length)
                             for name in ("val", "source", "target")}
        self.vocab = vocab
        self.info = dict(built["info"])
        log.info("text: %s", self.info)

    # ----- training --------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> Tuple[torch.Tensor, Logs]:
        tokens, labels = batch
        tokens = tokens.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        controller = getattr(model, "module", model).cn_controller
        with controller.step() as cn_on:
            logits = model(tokens)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        with torch.no_grad():
            accuracy = ((logits > 0).float() == labels).float().mean() * 100.0
        return loss, {"loss": loss.detach(), "accuracy": accuracy,
                      "cn": torch.tensor(float(cn_on))}

    # ----- evaluation ------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        metrics = binary_metrics(model, self.eval_loaders["val"], self.device)
        return {"val/loss": metrics["loss"], "val/accuracy": metrics["accuracy"]}

    def _domains(self, model: nn.Module) -> Dict[str, float]:
        out = {}
        for name, key in (("val", "val"), ("source", "source"), ("target", "target")):
            metrics = binary_metrics(model, self.eval_loaders[name], self.device)
            out[f"{key}/accuracy"] = metrics["accuracy"]
            out[f"{key}/loss"] = metrics["loss"]
        return out

    def final_evaluate(self, model: nn.Module, best_state: Optional[Mapping[str, Any]]
                       ) -> Dict[str, Any]:
        """Accuracy on source and target for the last model and, if given, the best state.

        Keys: ``source/accuracy``, ``target/accuracy`` (best-validation checkpoint; the last
        model when ``best_state`` is None, flagged by ``checkpoint = "last"``),
        ``source/accuracy_last``, ``target/accuracy_last``, the matching ``.../loss`` keys and
        ``val/...`` of both.
        """
        base = getattr(model, "module", model)
        last = self._domains(base)
        results: Dict[str, Any] = {f"{k}_last": v for k, v in last.items()}
        if best_state is not None:
            best_model = copy.deepcopy(base)
            best_model.load_state_dict(best_state)
            best = self._domains(best_model)
            results["checkpoint"] = "best_val_loss"
        else:
            best = last
            results["checkpoint"] = "last"
        results.update(best)
        return results

    def summary(self, results: Mapping[str, Any]) -> str:
        return (f"IMDb {results['source/accuracy']:.2f}% | SST-2 {results['target/accuracy']:.2f}%"
                f" ({results.get('checkpoint', 'best')}) | last: IMDb "
                f"{results['source/accuracy_last']:.2f}% SST-2 "
                f"{results['target/accuracy_last']:.2f}%")

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The data identity, so a resume onto changed data fails instead of mixing runs."""
        return {"valid_digest": self.info.get("valid_digest"),
                "vocab_rows": self.info.get("vocab_rows")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mine = self.state_dict()
        if dict(state) != mine:
            raise ConfigError(f"the checkpoint was made on other text data ({dict(state)}, now "
                              f"{mine}); resume with the same dataset settings or start anew")

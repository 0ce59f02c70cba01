"""TextCNN (Kim 2014) as in the sentiment tutorial the paper used, with SN/CN units.

Paper: Tang et al., ICCV 2021, Sec. 4.3 (Table 4): "GloVe + TextCNN", kernel sizes 3, 4, 5, SN
and CN between the embedding and the convolutions. The network is the ``CNN`` class of
bentrevett/pytorch-sentiment-analysis notebook 4: embedding 100
(trainable, pad row frozen by ``padding_idx``) -> three parallel convolutions with 100 filters
of widths 3/4/5 over the tokens -> ReLU -> max over time -> concat 300 -> dropout 0.5 ->
linear 300 -> 1 (one logit, BCE). The tutorial's ``Conv2d(1, 100, (fs, 100))`` over
``[N, 1, L, 100]`` equals the ``Conv1d(100, 100, fs)`` over ``[N, 100, L]`` used here (same
parameter count, 2,620,801 with the 25,002-row vocabulary); the 1-D layout is what the units need
(channel = embedding dimension, spatial = tokens; the paper gives no code for text).

Inputs shorter than the widest filter are padded to it (the tutorial pads only at inference, to
5 tokens; a batch of short SST-2 sentences would otherwise fail).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from snc.models.registry import attach_controller
from snc.ops.masked import MaskedCNSN, MaskedCrossNorm, MaskedSelfNorm
from snc.ops.options import CrossNormOptions, SelfNormOptions

PARAMS_BT = 2_620_801
"""Parameters of the tutorial's CNN with the 25,002-row vocabulary (printed in notebook 4)."""


class TextCNN(nn.Module):
    """GloVe + TextCNN with an optional SN/CN site between the embedding and the convolutions.

    Args:
        vocab_size: rows of the embedding (25,002 in the paper's setting).
        pad_idx: index of ``<pad>`` (its row starts at zero and gets no gradient).
        embedding_dim: width of the embedding (GloVe 6B 100d: 100).
        n_filters: filters per width.
        filter_sizes: convolution widths (tokens).
        dropout: dropout before the classifier.
        sn: SelfNorm options, or None.
        cn: CrossNorm options, or None.
        mask_padding: statistics of the units skip padding (True) or include it (False).
        seed: seed of the CN controller's generator.

    Shapes:
        input ``tokens (N, L)`` int64, right-padded with ``pad_idx``; output logits ``(N,)``.

    Attributes:
        cn_controller: a :class:`~snc.ops.CrossNormController` over the CN units (zero or one).
    """

    def __init__(self, vocab_size: int, pad_idx: int = 1, *, embedding_dim: int = 100,
                 n_filters: int = 100, filter_sizes: Sequence[int] = (3, 4, 5),
                 dropout: float = 0.5, sn: Optional[SelfNormOptions] = None,
                 cn: Optional[CrossNormOptions] = None, mask_padding: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        self.pad_idx = int(pad_idx)
        self.mask_padding = bool(mask_padding)
        self.min_length = max(filter_sizes)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=self.pad_idx)
        cn_unit = sn_unit = None
        if cn is not None:
            cn_unit = MaskedCrossNorm(cn)
        if sn is not None:
            sn_unit = MaskedSelfNorm(embedding_dim, gates=sn.gates)
        order = cn.order if cn is not None else "cn_sn"
        self.units = (MaskedCNSN(cn_unit, sn_unit, order)
                      if cn_unit is not None or sn_unit is not None else None)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, n_filters, fs) for fs in filter_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(len(filter_sizes) * n_filters, 1)
        attach_controller(self, cn, seed, "TextCNN")

    def load_embeddings(self, weights: torch.Tensor) -> None:
        """Copies ``(vocab_size, embedding_dim)`` initial vectors (GloVe) into the embedding."""
        if tuple(weights.shape) != tuple(self.embedding.weight.shape):
            raise ValueError(f"embedding weights of shape {tuple(weights.shape)} do not fit the "
                             f"embedding {tuple(self.embedding.weight.shape)}")
        with torch.no_grad():
            self.embedding.weight.copy_(weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] < self.min_length:
            tokens = F.pad(tokens, (0, self.min_length - tokens.shape[1]), value=self.pad_idx)
        x = self.embedding(tokens).permute(0, 2, 1)  # (N, emb, L)
        if self.units is not None:
            valid = tokens != self.pad_idx if self.mask_padding else None
            x = self.units(x, valid)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1))).squeeze(1)


def build_textcnn(vocab_size: int, pad_idx: int = 1, *, sn: Optional[SelfNormOptions] = None,
                  cn: Optional[CrossNormOptions] = None, mask_padding: bool = True,
                  embeddings: Optional[torch.Tensor] = None, seed: int = 0,
                  **overrides) -> TextCNN:
    """Builds the paper's TextCNN, checks the CN options against its one site, loads GloVe.

    Raises:
        ValueError: ``cn.active_num`` other than 1 (the model has one CN site).
    """
    if cn is not None and int(cn.active_num) != 1:
        raise ValueError(f"cn.active_num={cn.active_num} but TextCNN has one CrossNorm unit "
                         "(between the embedding and the convolutions); use cn.active_num=1")
    model = TextCNN(vocab_size, pad_idx, sn=sn, cn=cn, mask_padding=mask_padding, seed=seed,
                    **overrides)
    if embeddings is not None:
        model.load_embeddings(embeddings)
    model.backbone_name = "textcnn"
    return model

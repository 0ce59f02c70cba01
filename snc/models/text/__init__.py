"""Text models: the GloVe + TextCNN of the paper's Table 4 (IMDb -> SST-2)."""

from snc.models.text.textcnn import PARAMS_BT, TextCNN, build_textcnn

__all__ = ["PARAMS_BT", "TextCNN", "build_textcnn"]

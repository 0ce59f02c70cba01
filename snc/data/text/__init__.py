"""Text data for the paper's Table 4: IMDb (source), SST-2 (target), GloVe, tokenisation,
vocabulary, bucketed loaders and generated offline stand-ins (see each module)."""

from snc.data.text.glove import GloVe, embedding_matrix, load_glove, prepare_glove
from snc.data.text.imdb import TextSplit, prepare_imdb, read_imdb, split_train_valid
from snc.data.text.loader import BucketLoader, EvalLoader, collate
from snc.data.text.offline import write_offline_corpora
from snc.data.text.sst import read_sst
from snc.data.text.tokenize import get_tokenizer
from snc.data.text.vocab import Vocab

__all__ = ["BucketLoader", "EvalLoader", "GloVe", "TextSplit", "Vocab", "collate",
           "embedding_matrix", "get_tokenizer", "load_glove", "prepare_glove", "prepare_imdb",
           "read_imdb", "read_sst", "split_train_valid", "write_offline_corpora"]

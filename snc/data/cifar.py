"""CIFAR-10 / CIFAR-100 as uint8 arrays, from the official python-version archives.

Downloading goes through torchvision (``download_and_extract_archive``, which checks the
archive's published MD5). Reading does not use torchvision's dataset classes, which unpickle the
batch files with the full pickle machinery: each batch file is first checked against its
published MD5 (the values torchvision lists), then read with an unpickler that only admits NumPy
array reconstruction, so a tampered file cannot execute code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from snc.atomic import new_folders
from snc.data.checksums import file_digest

Arrays = Tuple[np.ndarray, np.ndarray]

# name: (folder, archive, archive MD5, URL, train files, test files, label key)
SOURCES = {
    "cifar10": (
        "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        [("data_batch_1", "c99cafc152244af753f735de768cd75f"),
         ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
         ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
         ("data_batch_4", "634d18415352ddfa80567beed471001a"),
         ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")],
        [("test_batch", "40351d587109b95175f43aff81a1287e")],
        "labels",
    ),
    "cifar100": (
        "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        [("train", "16019d7e3df5f24257cddd939b257f8d")],
        [("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")],
        "fine_labels",
    ),
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays; refuses everything else."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")


def read_batch(path: Path) -> Dict:
    """One python-version CIFAR batch file as a dict (array-only unpickling)."""
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


def _read_split(folder: Path, files: List[Tuple[str, str]], label_key: str, verify: bool
                ) -> Arrays:
    images, labels = [], []
    for name, md5 in files:
        path = folder / name
        if verify and file_digest(path, "md5") != md5:
            raise ValueError(f"{path} does not match its published MD5 {md5}: the file is "
                             f"corrupt or truncated; delete {folder} and download it again")
        batch = read_batch(path)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.concatenate(labels)


def load_cifar(name: str, data_dir: Path, download: bool = True, verify: bool = True
               ) -> Tuple[Arrays, Arrays]:
    """Returns ``((train_images, train_labels), (test_images, test_labels))``.

    Images are uint8 ``(N, 32, 32, 3)`` RGB in the official order, labels int64 (CIFAR-100: the
    100 fine labels).

    Raises:
        FileNotFoundError: when the data is absent and cannot be downloaded, naming the archive,
            its URL and MD5, and the folder to put it in.
        ValueError: when a batch file does not match its published MD5.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; choose cifar10 or cifar100")
    folder_name, archive, md5, url, train_files, test_files, label_key = SOURCES[name]
    root = Path(data_dir)
    folder = root / folder_name
    present = all((folder / f).exists() for f, _ in train_files + test_files)
    if not present and download:
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            with new_folders(root):  # no empty folder is left when the download fails
                download_and_extract_archive(url, str(root), filename=archive, md5=md5)
        except Exception as err:  # no network, proxy, checksum...
            raise FileNotFoundError(
                f"{name} is not in {folder} and the download failed ({err}). Fetch {url} "
                f"(MD5 {md5}), put {archive} in {root}/ and unpack it there "
                f"(tar xzf {archive}), then run again."
            ) from err
        present = True
    if not present:
        raise FileNotFoundError(
            f"{name} is not in {folder}. Fetch {url} (MD5 {md5}), unpack it into {root}/, or "
            f"run with dataset.download=true where there is network."
        )
    return (_read_split(folder, train_files, label_key, verify),
            _read_split(folder, test_files, label_key, verify))

"""Weighted k-nearest-neighbour probe, the rule of DINO's k-NN evaluation (Caron et al., "Emerging
Properties in Self-Supervised Vision Transformers", ICCV 2021; facebookresearch/dino eval_knn.py,
function `knn_classifier`): cosine similarity (train and query rows L2-normalised), the k most
similar train rows, each voting for its class with weight exp(similarity / T), votes summed per
class, the prediction the class of the largest sum. DINO's defaults: k = 20 (`--nb_knn`, "20 is
usually working the best"), T = 0.07 (`--temperature`).

Batched over query rows on the GPU when there is one (int8 train rows are moved there once, at their
own size). Memory is bounded whatever the sizes: a query chunk's similarity block (rows x N_train
float32) and its float32 copy each stay under CHUNK_BYTES (128 MiB), and the train matrix is
converted to float32 in row chunks (tlbench/classifiers/chunks.py), never as a whole, so int8 FNE
inputs need no float copy. A chunk's working set (the block, a product block, a train chunk, the
query chunk) is at most about 4 x CHUNK_BYTES: measured 136 MiB above the inputs at the default
job's 1,257 x 540 x 19,200, 413 MiB at 10,000 x 5,000 x 4,096 (benchmarks/knn_cost.py).

Rules DINO leaves open, made deterministic here:
- k > N_train: k is clamped to N_train (N_train - 1 for leave-one-out); DINO's topk would fail.
- ties in similarity at the k-th neighbour: the train rows strictly more similar than the k-th
  value are all neighbours, the rest are taken from the rows equal to it in ascending train index
  (torch.topk's choice among equal values is unspecified);
- ties in the vote totals: the lowest class index, i.e. the smallest label value, wins (DINO sorts
  the totals with an unstable sort). Votes are float64, summed per class in ascending train index,
  one neighbour column at a time (no atomics), so equal totals come out equal on every device.

No C, no cross-validation: `fit` stores the training rows (a reference, no copy) and `folds` is
ignored. `leave_one_out_knn_accuracy` is the same rule on the training rows alone, each classified by
the others: a transferability score that needs no test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tlbench.classifiers.chunks import CHUNK_BYTES, as_tensor, default_device, tensor_chunks
from tlbench.classifiers.cross_validation import Folds

NAME = "knn"
DEFAULT_K = 20  # DINO eval_knn.py: --nb_knn 10 20 100 200, "20 is usually working the best"
DEFAULT_TEMPERATURE = 0.07  # DINO eval_knn.py: --temperature 0.07
NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps, as DINO normalises: a zero row has similarity 0
FLOAT32 = 4  # bytes


def query_rows(n_train: int, dim: int, budget: int = CHUNK_BYTES) -> int:
    """Query rows per chunk: the similarity block (rows x n_train) and the chunk's float32 copy
    (rows x dim) each stay under `budget` bytes."""
    return max(1, min(budget // (FLOAT32 * max(1, n_train)), budget // (FLOAT32 * max(1, dim))))


def inverse_norm(rows: torch.Tensor) -> torch.Tensor:
    """1 / ||row|| of float rows; a zero row gets 1 / NORM_EPS (its similarities are then 0)."""
    return rows.norm(dim=1).clamp_min(NORM_EPS).reciprocal()


def cosine_block(
    queries: torch.Tensor, train: torch.Tensor, inv_train: torch.Tensor | None = None, train_rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(queries), N) cosine similarities of float32 query rows to every train row, the train rows
    converted in chunks, and the train rows' inverse norms (computed from those chunks when not
    given, so that the first query chunk's conversion serves for them too). The dot products are
    scaled by both rows' inverse norms: DINO's normalise-then-multiply up to float32 rounding, and
    int8 dot products stay exact, so equal train rows tie exactly."""
    device, n = queries.device, train.shape[0]
    rows = train_rows or max(1, CHUNK_BYTES // (FLOAT32 * max(1, train.shape[1])))  # tensor_chunks' default
    # one train chunk: the product is the block, no copy; else each product (at most the block's
    # size) is copied into its columns
    block = None if rows >= n else torch.empty(len(queries), n, device=device)
    norms = []
    for start, chunk in tensor_chunks(train, device, rows=rows):
        if block is None:
            block = queries @ chunk.T
        else:
            block[:, start : start + chunk.shape[0]] = queries @ chunk.T
        if inv_train is None:
            norms.append(inverse_norm(chunk))
        del chunk
    assert block is not None
    inv_train = torch.cat(norms) if inv_train is None else inv_train
    return block.mul_(inverse_norm(queries)[:, None]).mul_(inv_train), inv_train


def nearest(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k neighbours of each row of a (rows, N) similarity block: (train indices ascending,
    their similarities), each (rows, k). Every column more similar than the k-th largest value is
    taken, then the lowest indices among those equal to it: deterministic, where topk's choice among
    equal values is not specified."""
    # one more than k: a row whose (k+1)-th value equals its k-th has more columns equal to the k-th
    # value than places left, and topk's choice among them is redone from masks on those rows only
    values, columns = similarity.topk(min(k + 1, similarity.shape[1]), dim=1)
    kth, columns = values[:, k - 1 : k], columns[:, :k]
    if values.shape[1] > k:  # (with k = N every column is taken)
        crowded = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1)
        if len(crowded):
            block, at = similarity[crowded], kth[crowded]
            chosen, tie = block > at, block == at
            need = k - chosen.sum(1, keepdim=True)
            chosen |= tie & (tie.cumsum(1, dtype=torch.int32) <= need)  # the first `need` equal ones
            columns[crowded] = chosen.nonzero()[:, 1].view(-1, k)  # row-major: ascending per row
    columns = columns.sort(1).values
    return columns, similarity.gather(1, columns)


def weighted_votes(
    similarity: torch.Tensor, labels: torch.Tensor, num_classes: int, temperature: float
) -> torch.Tensor:
    """(rows, num_classes) float64 sums of exp(s / T) per class (DINO eval_knn.py knn_classifier:
    `distances.div_(T).exp_()`, summed over a one-hot of the neighbours' labels). Each row is scaled
    by exp(-max s / T), which leaves the argmax as it is and keeps a small T from overflowing."""
    s = similarity.double()
    weights = torch.exp((s - s.max(1, keepdim=True).values) / temperature)
    votes = torch.zeros(len(s), num_classes, dtype=torch.float64, device=s.device)
    # one neighbour column at a time: a fixed summation order, no atomics (k small kernels a chunk:
    # nothing at DINO's k, noticeable only for k in the thousands)
    for j in range(s.shape[1]):
        votes.scatter_add_(1, labels[:, j : j + 1], weights[:, j : j + 1])
    return votes


def first_argmax(votes: torch.Tensor) -> torch.Tensor:
    """The lowest column index among each row's maxima (DINO sorts with an unstable sort)."""
    columns = torch.arange(votes.shape[1], device=votes.device).expand_as(votes)
    best = votes == votes.max(1, keepdim=True).values
    return torch.where(best, columns, votes.shape[1]).min(1).values


def knn_predict(
    train: np.ndarray,
    train_labels: np.ndarray,
    queries: np.ndarray,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    exclude_self_offset: int | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    chunk_rows: int | None = None,
    train_chunk_rows: int | None = None,
) -> np.ndarray:
    """The class index (into 0..num_classes-1, as `train_labels`) that the weighted k-NN vote gives
    each query row; the rule of DINO's eval_knn.py `knn_classifier`, with the tie rules of this
    module's docstring. k is clamped to the train rows available.

    `exclude_self_offset`: the queries are train rows [offset, offset + len(queries)); each one's own
    row is left out of its neighbours (similarity -inf), for leave-one-out. `chunk_rows` /
    `train_chunk_rows`: query / train rows per chunk (default: CHUNK_BYTES a block), for tests."""
    if k < 1 or int(k) != k:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    dev = default_device(str(device) if device is not None else None)
    x = as_tensor(train, dev)
    # Every query chunk reads the whole train matrix: on a GPU, int8 rows move there once (their own
    # size) rather than once per chunk; float rows already did (as_tensor).
    x = x.to(dev) if x.device.type != dev.type else x
    q = as_tensor(queries, dev)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1]:
        shapes = f"{tuple(x.shape)} and {tuple(q.shape)}"
        raise ValueError(f"train and queries must be 2-d with the same width, got {shapes}")
    n = x.shape[0]
    if len(train_labels) != n:
        raise ValueError(f"{len(train_labels)} train labels for {n} train rows")
    available = n - (exclude_self_offset is not None)
    if available < 1:
        raise ValueError(f"k-NN needs at least one train row to vote{' besides the query' * (available == 0)}")
    if exclude_self_offset is not None and not 0 <= exclude_self_offset <= n - q.shape[0]:
        raise ValueError(f"queries at train rows [{exclude_self_offset}, +{q.shape[0]}) are not all train rows")
    k = min(int(k), available)
    y = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(dev)
    num_classes = int(num_classes if num_classes is not None else int(y.max()) + 1)
    inv_x = None  # the train rows' inverse norms, from the first query chunk's conversion of them
    predictions = []
    with torch.no_grad():
        for start, chunk in tensor_chunks(q, dev, rows=chunk_rows or query_rows(n, x.shape[1])):
            rows = chunk.shape[0]
            similarity, inv_x = cosine_block(chunk, x, inv_x, train_chunk_rows)
            if exclude_self_offset is not None:
                own = torch.arange(rows, device=dev)
                similarity[own, exclude_self_offset + start + own] = -torch.inf
            columns, nearest_similarity = nearest(similarity, k)
            del similarity
            votes = weighted_votes(nearest_similarity, y[columns], num_classes, temperature)
            predictions.append(first_argmax(votes))
    return torch.cat(predictions).cpu().numpy() if predictions else np.zeros(0, dtype=np.int64)


def leave_one_out_knn_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy of the weighted k-NN rule on the training rows, each row classified by all the
    others (k clamped to N - 1): a transferability score from training features alone."""
    classes, encoded = np.unique(np.asarray(labels), return_inverse=True)
    predicted = knn_predict(
        features, encoded, features, k, temperature, exclude_self_offset=0, num_classes=len(classes), device=device
    )
    return float((predicted == encoded).mean())


class KNN:
    """Weighted k-NN probe (DINO eval_knn.py knn_classifier): `k` neighbours by cosine similarity,
    votes exp(s / `temperature`). `device`: null for the GPU when there is one. `metric` and
    `random_state` are accepted as every classifier's are and unused: there is nothing to select or
    draw. `fit(..., folds)` ignores `folds` (they score a C grid elsewhere; k-NN has no C)."""

    label = NAME

    def __init__(
        self,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
        device: str | None = None,
        metric: str = "top1",
        random_state: int = 0,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"classifier.k must be a whole number >= 1, got {k!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
            raise ValueError(f"classifier.temperature must be > 0, got {temperature!r}")
        self.k, self.temperature = k, float(temperature)
        self.device = default_device(device)
        self.metric, self.random_state = metric, random_state
        self.classes_: np.ndarray | None = None
        self._train: np.ndarray | None = None
        self._encoded: np.ndarray | None = None

    def fit(self, features: np.ndarray, labels: np.ndarray, folds: Folds | None = None) -> KNN:
        """Stores the training rows (no copy) and their classes; `folds` is ignored."""
        features, labels = np.asarray(features), np.asarray(labels)
        if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
            shapes = f"{features.shape} and {labels.shape}"
            raise ValueError(f"fit needs an (n, d) matrix and n labels, n >= 1; got {shapes}")
        self.classes_, self._encoded = np.unique(labels, return_inverse=True)
        self._train = features
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The original label values (as given to fit) of each row's weighted k-NN vote."""
        assert self._train is not None and self.classes_ is not None and self._encoded is not None, "fit first"
        index = knn_predict(
            self._train,
            self._encoded,
            features,
            self.k,
            self.temperature,
            num_classes=len(self.classes_),
            device=self.device,
        )
        return self.classes_[index]

    def describe(self) -> dict[str, Any]:
        n = None if self._train is None else len(self._train)
        return {
            "type": NAME,
            "k": self.k,
            "k_used": None if n is None else min(self.k, n),  # clamped to the train rows
            "temperature": self.temperature,
            "device": str(self.device),
            "similarity": "cosine",
            "weights": "exp(similarity / temperature)",
            "ties": "k-th neighbour: lower train index; vote totals: lower class index",
            "train_rows": n,
            "source": "DINO eval_knn.py knn_classifier (Caron et al. 2021)",
        }

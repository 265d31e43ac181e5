"""A trained classifier head: a linear layer on a small model's embeddings, calibrated.

Prompting a 135M model to choose among dozens of labels is near chance; a logistic regression
on the same model's mean-pooled embeddings, fitted on a few thousand examples, is not. The head
keeps everything needed to trust it later: its label set, the embedding model it was fitted on,
a hash of its training data, a temperature fitted on held-out examples (so its probabilities
mean what they say), a sample of its training texts (to name the nearest examples as evidence),
and the metrics it was accepted on. It is saved as one `.npz` blob (numpy only to load and
apply; scikit-learn only to fit).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from shoal.errors import HeadError, MissingExtraError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

FORMAT = 1
MIN_PER_LABEL = 3
NEIGHBOURS_PER_LABEL = 20


class HeadInfo(BaseModel):
    """What a head is, without its weights."""

    format: int = FORMAT
    labels: list[str]
    embed_model: str
    dim: int
    data_hash: str
    n_train: int
    n_calibration: int
    temperature: float
    version: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    label_counts: dict[str, int] = Field(default_factory=dict)


class Prediction(BaseModel):
    label: str
    probability: float
    distribution: dict[str, float]


def data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    """Order-free hash of the labelled data a head was fitted on."""
    digest = hashlib.sha256()
    for line in sorted(f"{label}\t{text}" for text, label in zip(texts, labels, strict=True)):
        digest.update(line.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def split_for_calibration(labels: Sequence[str], *, share: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Stratified (fit, calibrate) indices: each label keeps at least two examples to fit on
    and gives at least one to calibrate when it has three or more."""
    import random

    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    fit: list[int] = []
    calibrate: list[int] = []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        n_cal = min(len(items) - 2, max(1, round(len(items) * share))) if len(items) >= 3 else 0
        calibrate += items[:n_cal]
        fit += items[n_cal:]
    return sorted(fit), sorted(calibrate)


def softmax(logits: Matrix) -> Matrix:
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    out: Matrix = exp / exp.sum(axis=1, keepdims=True)
    return out


# Below this many held-out examples the temperature may soften the head but never sharpen it:
# a handful of examples that all happen to be right would otherwise drive T to its floor and
# make every answer look certain.
MIN_TO_SHARPEN = 50


def fit_temperature(logits: Matrix, gold: npt.NDArray[np.int64]) -> float:
    """The temperature that minimises negative log-likelihood on held-out logits.

    One parameter, so a golden-section search on log T is exact enough and needs no optimiser.
    """
    import numpy as np

    def nll(log_t: float) -> float:
        probs = softmax((logits / math.exp(log_t)).astype(np.float64))
        return float(-np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None)).mean())

    low, high = math.log(0.05 if len(gold) >= MIN_TO_SHARPEN else 1.0), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return math.exp((low + high) / 2)


class TrainedHead:
    """Standardise -> linear -> softmax(logits / temperature)."""

    def __init__(
        self,
        info: HeadInfo,
        *,
        mean: Matrix,
        scale: Matrix,
        coef: Matrix,
        intercept: Matrix,
        neighbour_vectors: Matrix,
        neighbour_labels: npt.NDArray[np.int64],
        neighbour_texts: list[str],
    ) -> None:
        self.info = info
        self.mean = mean
        self.scale = scale
        self.coef = coef
        self.intercept = intercept
        self.neighbour_vectors = neighbour_vectors
        self.neighbour_labels = neighbour_labels
        self.neighbour_texts = neighbour_texts

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    # --- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        vectors: Matrix,
        labels: Sequence[str],
        texts: Sequence[str],
        *,
        embed_model: str,
        min_per_label: int = MIN_PER_LABEL,
        calibration_share: float = 0.2,
        regularisation: float = 1.0,
        seed: int = 0,
    ) -> TrainedHead:
        """Fit on most of the examples and calibrate the temperature on the rest."""
        import numpy as np

        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise MissingExtraError("training a classifier head", "train", "scikit-learn") from None

        if len(vectors) != len(labels) or len(labels) != len(texts):
            raise HeadError(f"{len(vectors)} vectors, {len(labels)} labels and {len(texts)} texts: they must match")
        counts: dict[str, int] = defaultdict(int)
        for label in labels:
            counts[label] += 1
        if len(counts) < 2:
            raise HeadError(f"a classifier head needs examples of at least two labels; got {sorted(counts)}")
        scarce = {label: n for label, n in sorted(counts.items()) if n < min_per_label}
        if scarce:
            listed = ", ".join(f"{label} ({n})" for label, n in scarce.items())
            raise HeadError(
                f"too few examples for {len(scarce)} label(s): {listed}; each label needs at least "
                f"{min_per_label}. Add examples, or drop those labels from the data"
            )
        label_list = sorted(counts)
        index = {label: i for i, label in enumerate(label_list)}
        gold = np.array([index[label] for label in labels], dtype=np.int64)
        fit_idx, cal_idx = split_for_calibration(labels, share=calibration_share, seed=seed)

        x = np.asarray(vectors, dtype=np.float64)
        mean = x[fit_idx].mean(axis=0)
        scale = x[fit_idx].std(axis=0)
        scale[scale < 1e-6] = 1.0
        z = (x - mean) / scale
        model = LogisticRegression(C=regularisation, max_iter=2000, random_state=seed)
        model.fit(z[fit_idx], gold[fit_idx])
        coef = model.coef_.astype(np.float32)
        intercept = model.intercept_.astype(np.float32)
        if coef.shape[0] == 1:  # scikit-learn stores a binary problem as one row: make it two
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
        temperature = 1.0
        if cal_idx:
            logits = z[cal_idx] @ coef.T.astype(np.float64) + intercept
            temperature = fit_temperature(logits.astype(np.float32), gold[cal_idx])

        keep = _neighbour_sample(labels, seed=seed)
        unit = x[keep] / np.clip(np.linalg.norm(x[keep], axis=1, keepdims=True), 1e-9, None)
        info = HeadInfo(
            labels=label_list,
            embed_model=embed_model,
            dim=int(x.shape[1]),
            data_hash=data_hash(texts, labels),
            n_train=len(fit_idx),
            n_calibration=len(cal_idx),
            temperature=temperature,
            label_counts=dict(sorted(counts.items())),
        )
        return cls(
            info,
            mean=mean.astype(np.float32),
            scale=scale.astype(np.float32),
            coef=coef,
            intercept=intercept,
            neighbour_vectors=unit.astype(np.float16),
            neighbour_labels=gold[keep],
            neighbour_texts=[texts[i] for i in keep],
        )

    # --- use ------------------------------------------------------------------------------------

    def check_vectors(self, vectors: Matrix, embed_model: str) -> None:
        if embed_model != self.info.embed_model:
            raise HeadError(
                f"this head was trained on embeddings of {self.info.embed_model}, not {embed_model}: "
                f"retrain it with `shoal train` on {embed_model}, or embed with {self.info.embed_model}"
            )
        if vectors.ndim != 2 or vectors.shape[1] != self.info.dim:
            raise HeadError(
                f"embeddings have {vectors.shape[-1]} dimensions but the head expects {self.info.dim}; "
                f"the model behind {embed_model} changed since training: retrain with `shoal train`"
            )

    def probabilities(self, vectors: Matrix) -> Matrix:
        import numpy as np

        z = (np.asarray(vectors, dtype=np.float32) - self.mean) / self.scale
        logits = (z @ self.coef.T + self.intercept) / self.info.temperature
        return softmax(logits.astype(np.float32))

    def predict(self, vectors: Matrix) -> list[Prediction]:
        probs = self.probabilities(vectors)
        out = []
        for row in probs:
            ranked = sorted(zip(self.labels, row.tolist(), strict=True), key=lambda item: item[1], reverse=True)
            out.append(
                Prediction(
                    label=ranked[0][0],
                    probability=float(ranked[0][1]),
                    distribution={label: round(float(p), 6) for label, p in ranked[:10]},
                )
            )
        return out

    def nearest(self, vector: Matrix, k: int = 3) -> list[tuple[str, str, float]]:
        """(text, label, cosine similarity) of the closest kept training examples."""
        import numpy as np

        if not len(self.neighbour_texts):
            return []
        unit = np.asarray(vector, dtype=np.float32)
        unit = unit / max(float(np.linalg.norm(unit)), 1e-9)
        sims = self.neighbour_vectors.astype(np.float32) @ unit
        order = np.argsort(-sims)[:k]
        return [(self.neighbour_texts[i], self.labels[int(self.neighbour_labels[i])], float(sims[i])) for i in order]

    # --- storage --------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        import numpy as np

        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            info=np.frombuffer(self.info.model_dump_json().encode(), dtype=np.uint8),
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept=self.intercept,
            neighbour_vectors=self.neighbour_vectors,
            neighbour_labels=self.neighbour_labels,
            neighbour_texts=np.frombuffer(json.dumps(self.neighbour_texts).encode(), dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, *, where: str = "the head") -> TrainedHead:
        import numpy as np

        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                info = HeadInfo.model_validate_json(data["info"].tobytes())
                if info.format > FORMAT:
                    raise HeadError(f"{where} was saved by a newer shoal (format {info.format}); upgrade shoal")
                return cls(
                    info,
                    mean=data["mean"],
                    scale=data["scale"],
                    coef=data["coef"],
                    intercept=data["intercept"],
                    neighbour_vectors=data["neighbour_vectors"],
                    neighbour_labels=data["neighbour_labels"],
                    neighbour_texts=json.loads(data["neighbour_texts"].tobytes()),
                )
        except HeadError:
            raise
        except Exception as exc:  # a truncated file, a different format, a JSON error
            raise HeadError(f"{where} is not a readable shoal head ({type(exc).__name__}: {exc})") from None


def _neighbour_sample(labels: Sequence[str], *, seed: int) -> list[int]:
    """Up to NEIGHBOURS_PER_LABEL example indices per label, kept to explain predictions."""
    import random

    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        items = list(by_label[label])
        rng.shuffle(items)
        keep += items[:NEIGHBOURS_PER_LABEL]
    return sorted(keep)

"""Documents: RecSim NG's frozen corpus and RecSim's per-step candidate sampler, in torch.

:func:`sample_ng_corpus` mirrors ``CorpusWithTopicAndQuality.initial_state`` in
``recsim_ng/applications/recsys_partially_observable_rl/corpus.py``: 70% of the topics are
"trashy" with quality means ``linspace(min, 0)``, the rest "nutritious" with ``linspace(0, max)``;
a document's topic is uniform, its quality ``N(mean[topic], 0.1)``, its features
``N(one_hot(topic), 0.7)``, its length ``video_length`` and its id ``1..num_docs`` (0 is NG's
null doc). :func:`sample_recsim_documents` mirrors ``UtilityModelVideoSampler.sample_document`` in
``recsim/environments/interest_evolution.py``: uniform cluster, one-hot features, quality
``N(cluster_means[cluster], 0.1)`` with the same 70/30 trashy/nutritious split over
``[min_utility, max_utility]``, fixed length — batched over users and candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from core_rl.common.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from recsys.simulation.config import InterestEvolutionConfig, RecSimInterestEvolutionConfig


def topic_quality_means(num_topics: int, min_utility: float, max_utility: float) -> torch.Tensor:
    """Quality mean of each topic: ``int(0.7 T)`` trashy topics then the nutritious rest."""
    num_trashy = int(num_topics * 0.7)
    trashy = torch.linspace(min_utility, 0.0, num_trashy, dtype=torch.float32)
    nutritious = torch.linspace(0.0, max_utility, num_topics - num_trashy, dtype=torch.float32)
    return torch.cat([trashy, nutritious])


@dataclass(frozen=True)
class Corpus:
    """A table of documents; every field's first axis is the document."""

    doc_id: torch.Tensor  # [D] int64, 1-based as in RecSim NG
    topic: torch.Tensor  # [D] int64
    quality: torch.Tensor  # [D] float32
    features: torch.Tensor  # [D, T] float32
    length: torch.Tensor  # [D] float32

    @property
    def num_docs(self) -> int:
        return int(self.doc_id.shape[0])

    @property
    def num_topics(self) -> int:
        return int(self.features.shape[1])

    def to(self, device: str | torch.device) -> "Corpus":
        return Corpus(*(t.to(device) for t in (self.doc_id, self.topic, self.quality, self.features, self.length)))

    def to_frame(self) -> "pd.DataFrame":
        """One row per document: doc_id, topic, quality, length, feature_0..feature_{T-1}."""
        import pandas as pd

        data = {
            "doc_id": self.doc_id.cpu().numpy(),
            "topic": self.topic.cpu().numpy(),
            "quality": self.quality.cpu().numpy(),
            "length": self.length.cpu().numpy(),
        }
        feats = self.features.cpu().numpy()
        for j in range(feats.shape[1]):
            data[f"feature_{j}"] = feats[:, j]
        return pd.DataFrame(data)

    @classmethod
    def from_frame(cls, frame: "pd.DataFrame") -> "Corpus":
        """Inverse of :meth:`to_frame` (rows in corpus order)."""
        cols = [c for c in frame.columns if c.startswith("feature_")]
        missing = {"doc_id", "topic", "quality", "length"} - set(frame.columns)
        if missing or not cols:
            raise ConfigError(f"corpus table lacks columns {sorted(missing) or ['feature_*']}")
        cols.sort(key=lambda c: int(c.split("_")[1]))
        return cls(
            doc_id=torch.tensor(frame["doc_id"].to_numpy(), dtype=torch.int64),
            topic=torch.tensor(frame["topic"].to_numpy(), dtype=torch.int64),
            quality=torch.tensor(frame["quality"].to_numpy(), dtype=torch.float32),
            features=torch.tensor(frame[cols].to_numpy(), dtype=torch.float32),
            length=torch.tensor(frame["length"].to_numpy(), dtype=torch.float32),
        )


def sample_ng_corpus(config: "InterestEvolutionConfig", generator: torch.Generator) -> Corpus:
    """A RecSim NG interest-evolution corpus (``CorpusWithTopicAndQuality.initial_state``)."""
    device = generator.device
    d, t = config.num_docs, config.num_topics
    means = topic_quality_means(t, config.topic_min_utility, config.topic_max_utility).to(device)
    topic = torch.randint(0, t, (d,), generator=generator, device=device)
    quality = means[topic] + config.doc_quality_scale * torch.randn(d, generator=generator, device=device)
    one_hot = torch.nn.functional.one_hot(topic, t).to(torch.float32)
    features = one_hot + config.doc_feature_scale * torch.randn(d, t, generator=generator, device=device)
    length = torch.full((d,), float(config.video_length), device=device)
    doc_id = torch.arange(1, d + 1, dtype=torch.int64, device=device)
    return Corpus(doc_id=doc_id, topic=topic, quality=quality, features=features, length=length)


def sample_recsim_documents(
    config: "RecSimInterestEvolutionConfig", shape: tuple[int, ...], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``shape`` independent RecSim interest-evolution videos: ``(cluster, features, quality, length)``.

    cluster ``[*shape]`` int64, features ``[*shape, T]`` one-hot, quality and length ``[*shape]``.
    """
    device = generator.device
    t = config.num_topics
    means = topic_quality_means(t, config.min_utility, config.max_utility).to(device)
    cluster = torch.randint(0, t, shape, generator=generator, device=device)
    features = torch.nn.functional.one_hot(cluster, t).to(torch.float32)
    quality = means[cluster] + config.doc_quality_scale * torch.randn(shape, generator=generator, device=device)
    length = torch.full(shape, float(config.video_length), device=device)
    return cluster, features, quality, length

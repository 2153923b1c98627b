"""The ``experts`` section of the config: how the experts are specialised before routers are learned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from promoe.config.fields import check_fields, require, setting

OUTPUT_CLUSTERS = 3
"""The clusters of ``experts.clusters=output``, one per kind of output (:data:`promoe.data.clusters.OUTPUT_KINDS`)."""


@dataclass
class ExpertsConfig:
    """Specialised experts (Branch-Train-MiX style): each expert trained on one cluster of training tasks
    before ``moe`` and ``promoe`` learn their routers over the same experts."""

    specialise: bool = setting(False, "Specialise the experts first (false: experts upcycled and trained end to "
                                      "end with their router, the standard recipe).")
    clusters: Literal["description", "category", "given", "meta", "output"] = setting(
        "description", "How training tasks are clustered, one cluster per expert: k-means of description "
                       "embeddings, whole categories, `cluster_file`, a label in every task's `_meta` "
                       "(`cluster_key`), or the kind of output (label, span, free text: model.n_experts=3).")
    cluster_file: str | None = setting(None, "JSON {task: cluster} (clusters=given).")
    cluster_key: str = setting("rule", "The `_meta` label that makes the clusters (clusters=meta; `rule` in the "
                                       "synthetic suite).")
    steps: int = setting(64, "Optimizer steps of the specialisation (every example to its cluster's expert).", lo=1)
    lr: float | None = setting(None, "Peak learning rate of the specialisation (unset: train.lr).", gt=0)
    balance: bool = setting(True, "Sample every cluster equally often, so every expert gets the same number of "
                                  "updates (as Branch-Train-MiX trains each expert for the same steps); false: "
                                  "every training task equally often, so big clusters' experts train longer.")
    freeze: bool = setting(True, "Keep the specialised weights frozen while routers are learned (false: "
                                 "fine-tune them jointly with the routers).")
    from_run: str | None = setting(None, "A run folder whose specialised experts (experts/, train/experts/) this "
                                         "run starts from instead of training its own; its model and experts "
                                         "settings must be this run's.")
    per_seed: bool = setting(False, "With several seeds (--seeds): specialise the experts again for every seed "
                                    "(true), or once with the first seed, every later seed starting from them "
                                    "(false): then only what is learned over the experts is re-seeded.")

    def validate(self) -> None:
        check_fields(self, "experts")
        require(self.clusters != "given" or self.cluster_file, "experts.cluster_file", self.cluster_file,
                "is needed with experts.clusters=given", "name a JSON file {task: cluster}")

"""Validated configs of the two simulated-user environments.

:class:`InterestEvolutionConfig` holds the parameters of RecSim NG's interest-evolution
application (``recsim_ng/applications/recsys_partially_observable_rl``: ``user.py``,
``corpus.py``, ``simulation_config.py``); the defaults are the ones in that code.
:class:`RecSimInterestEvolutionConfig` holds those of the original RecSim interest-evolution
environment (``recsim/environments/interest_evolution.py``: ``UtilityModelVideoSampler``,
``UtilityModelUserSampler``, ``IEvUserModel``, ``create_environment``), the setting of the SlateQ
paper (Ie et al., 2019): 20 topics, 10 candidates resampled every step, slates of 2, a 200-minute
time budget. Both are frozen pydantic models; unknown fields and out-of-range values raise
:class:`core_rl.common.errors.ConfigError` through :func:`core_rl.common.config.parse_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core_rl.common.config import Device


class _SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slate_size: int = Field(
        2, ge=1, description="Documents shown per step (the action is that many candidate indices)."
    )
    flat_observation: bool = Field(
        False,
        description="Observe one flat Box (user features then the flattened candidate table) "
        "instead of the dict {'user', 'doc'}.",
    )
    device: Device = Field("cpu", description="torch device the simulation runs on.")
    choice_info: bool = Field(
        True,
        description="Put the choice model's per-candidate quantities (candidate_choice_logit, "
        "no_click_logit, candidate_engagement, candidate_doc_id) in every info; False "
        "skips that O(N*C) work (env.choice_scores() still computes them on demand).",
    )


class InterestEvolutionConfig(_SimConfig):
    """RecSim NG interest evolution (the twin's defaults are RecSim NG's)."""

    num_topics: int = Field(2, ge=1, description="Topics = interest/feature dimension (NG num_topics).")
    num_docs: int = Field(
        100, ge=1, description="Corpus size (NG num_docs); the corpus is frozen (NG freeze_corpus=True)."
    )
    num_candidates: int | None = Field(
        None,
        ge=1,
        description="Candidates shown to the policy per user and step: None = the whole corpus in "
        "corpus order (NG: the recommender sees every available doc); else a uniform "
        "sample without replacement, per user and step.",
    )
    horizon: int = Field(100, ge=1, description="Steps per episode (NG has no termination; its demo uses 100).")
    no_click_mass: float = Field(0.0, description="Logit of the no-click option (InterestEvolutionUser no_click_mass).")
    choice_logit_offset: float = Field(
        2.0, description="Added to every affinity before the MNL (NG: `affinities + 2.0`)."
    )
    interest_step_size: float = Field(
        0.1, ge=0.0, description="Control scale of the interest update (interest_step_size)."
    )
    interest_update_noise_scale: float | None = Field(
        None,
        ge=0.0,
        description="Std of Gaussian noise on a clicked user's interest update (None = noiseless, NG's default).",
    )
    interest_noise: Literal["recsim_ng", "independent"] = Field(
        "recsim_ng",
        description="Where the update noise of a session's FIRST step comes from (only with "
        "interest_update_noise_scale > 0). 'recsim_ng': the standard-normal draw behind the initial "
        "interest is reused, noise_0 = x_0 / initial_interest_scale, as RecSim NG's graph-compiled "
        "TFRuntime (its default) does; later steps draw fresh noise. 'independent': every step draws "
        "fresh noise (what NG's eager runtime, graph_compile=False, does).",
    )
    initial_interest_scale: float = Field(
        1.0, gt=0.0, description="Std of the N(0, s^2 I) initial interest (initial_dist_scales)."
    )
    max_user_affinity: float = Field(
        10.0, gt=0.0, description="M in the squashing 4M(sigmoid(x/M) - 1/2) (max_user_affinity)."
    )
    topic_min_utility: float = Field(
        -1.0, description="Quality mean of the most trashy topic (CorpusWithTopicAndQuality)."
    )
    topic_max_utility: float = Field(1.0, description="Quality mean of the most nutritious topic.")
    video_length: float = Field(2.0, gt=0.0, description="Length of every document (video_length).")
    doc_quality_scale: float = Field(
        0.1, gt=0.0, description="Std of doc quality around its topic mean (NG's doc_quality_var, used as a scale)."
    )
    doc_feature_scale: float = Field(0.7, gt=0.0, description="Std of doc features around the topic one-hot.")
    compile: bool = Field(
        False,
        description="Run the user step as one inductor kernel (compiled on the first step: seconds, "
        "again per batch size; called without dynamo) that also draws the choice uniforms, from a "
        "counter-based hash keyed by the env's generator (recsys.simulation.user_model.counter_uniforms), "
        "and checks the slates: several times faster for large batches; another random stream than "
        "the eager step (same seed: same corpus and initial users, statistically the same clicks), and "
        "the same choices as the eager step fed those uniforms (the rest within float rounding); falls "
        "back to that eager step with one warning where inductor cannot compile.",
    )
    observe_interest: bool = Field(
        True,
        description="Put the user's interest vector in the observation "
        "(NG's user observation is empty: False gives a 0-wide user part).",
    )

    @model_validator(mode="after")
    def _check(self) -> "InterestEvolutionConfig":
        shown = self.num_docs if self.num_candidates is None else self.num_candidates
        if self.num_candidates is not None and self.num_candidates > self.num_docs:
            raise ValueError(f"num_candidates ({self.num_candidates}) cannot exceed num_docs ({self.num_docs})")
        if self.slate_size > shown:
            raise ValueError(f"slate_size ({self.slate_size}) cannot exceed the {shown} candidates shown")
        return self

    @property
    def candidates_shown(self) -> int:
        return self.num_docs if self.num_candidates is None else self.num_candidates


class RecSimInterestEvolutionConfig(_SimConfig):
    """Original RecSim interest evolution (defaults: ``create_environment`` with 10 candidates, slate 2)."""

    num_topics: int = Field(20, ge=1, description="Topics/clusters = feature dimension (IEvVideo.NUM_FEATURES).")
    num_candidates: int = Field(
        10, ge=1, description="Candidate documents per user and step (env_config num_candidates)."
    )
    resample_documents: bool = Field(True, description="Draw a new candidate set every step (else once per episode).")
    choice_model: Literal["proportional", "mnl"] = Field(
        "proportional",
        description="'proportional': MultinomialProportionalChoiceModel (what create_environment "
        "uses); 'mnl': MultinomialLogitChoiceModel.",
    )
    no_click_mass: float = Field(1.0, description="Score of the no-click option (IEvUserModel no_click_mass).")
    min_normalizer: float = Field(-1.0, le=0.0, description="Offset subtracted from scores by the proportional model.")
    time_budget: float = Field(200.0, gt=0.0, description="Initial session time budget in minutes.")
    step_penalty: float = Field(0.5, ge=0.0, description="Budget lost on a step without a click.")
    video_length: float = Field(4.0, gt=0.0, description="Length of every document in minutes.")
    min_utility: float = Field(-3.0, description="Quality mean of cluster 0 (UtilityModelVideoSampler min_utility).")
    max_utility: float = Field(3.0, description="Quality mean of the last cluster (max_utility).")
    doc_quality_scale: float = Field(0.1, gt=0.0, description="Std of doc quality around its cluster mean.")
    user_quality_factor: float = Field(0.0, description="Weight of the expected utility in the budget bonus.")
    document_quality_factor: float = Field(1.0, description="Weight of doc quality in the budget bonus.")
    user_update_alpha: float = Field(
        0.9 / 3.4, description="Budget bonus scale: budget += alpha * watch_time * utility."
    )
    alpha_x_intercept: float = Field(1.0, gt=0.0, description="Interest step size alpha(x) = y0 - (y0/x0)|x|: x0.")
    alpha_y_intercept: float = Field(0.3, ge=0.0, description="... and y0.")
    max_episode_steps: int | None = Field(
        27000, ge=1, description="Truncation (RecSim's runner default 27000; the budget ends episodes long before)."
    )
    observe_time_budget: bool = Field(
        False, description="Append the remaining budget to the user features (RecSim observes the interests only)."
    )
    observe_doc_quality: bool = Field(
        False, description="Append quality to each candidate's features (RecSim observes the topic features only)."
    )

    @model_validator(mode="after")
    def _check(self) -> "RecSimInterestEvolutionConfig":
        if self.slate_size > self.num_candidates:
            raise ValueError(f"slate_size ({self.slate_size}) cannot exceed num_candidates ({self.num_candidates})")
        if self.choice_model == "proportional" and self.no_click_mass - self.min_normalizer <= 0:
            raise ValueError("no_click_mass - min_normalizer must be positive for the proportional choice model")
        return self

    @property
    def candidates_shown(self) -> int:
        return self.num_candidates

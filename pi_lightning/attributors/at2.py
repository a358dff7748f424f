"""AT2 (Attribution with Attention) for classifier heads: learned head weights, then one pass per example.

AT2 (Cohen-Wang et al., 2025, "Learning to Attribute with Attention") treats each attention head's
attention weights as a feature and learns, from ablations, how to combine them. Here the query is
the classifying position (the last non-pad token, where a ``*ForSequenceClassification`` model
reads its prediction); the feature of head ``(l, h)`` for attributed feature ``i`` is that
position's attention to feature ``i``'s tokens, summed over them (:mod:`pi_lightning.attributors._attention`,
recomputed without eager attention). Attribution of feature ``i``: ``sum_lh w_lh X[i, l, h]``.

Fitting follows the published estimator: for every example, ablations ``z`` (``M x n``, True = kept)
with the explained class's output ``y`` under each; the prediction of an ablation is
``(2z - 1) X w``; ``w`` (one weight per layer and head, initialised to ``1 / (L H)``) maximises the
Pearson correlation between predictions and outputs across each example's ablations, averaged over
examples (Adam, lr 1e-3, cosine schedule, gradient norm clipped at 1, 1,000 iterations, at most 512
examples per step); ``non_negative`` projects ``w`` onto ``w >= 0`` after every step; the result is
divided by its L1 norm. Correlation ignores scale and offset, so scores rank features but are not
in the units of ``output``.

Ablations come from two sources:

* :meth:`AT2.fit`: AT2's own random ablations (each feature kept with probability ``keep_prob``,
  ``budget`` per example), read at the final position: ``budget + 1`` passes per example.
* :meth:`AT2.fit_from_attributions`: MP-PI's results, whose ``extras["coalitions"]`` and
  ``extras["values"]`` are (coalition, output) pairs that MP-PI's masked passes produced anyway;
  the only new pass is one over each unmasked input, for its head features. Under the default
  ``mask="remove"`` MP-PI's values are exact outputs of the removal-masked inputs (its
  intermediate predictions are the removal game itself), the same targets as :meth:`AT2.fit`'s;
  with ``"..."`` they are intermediate predictions (the features after a coalition's last active
  one not yet seen rather than masked), an approximation of the masked-input targets.

When AT2 is not worth using: AT2 fits one weight per attention head (270 for SmolLM2-135M) from
ablation correlations, so a fit on tens of texts is noisy, while SP-PI, also free at attribution
time, needs no fit. Refitted from MP-PI's passes on the texts it explains, AT2 comes close to MP-PI,
but MP-PI has then already been paid for (the measurements: ``benchmarks/results/RESULTS.md``, "AT2:
is the fit worth it?"). So: where SP-PI is available, AT2 fitted on tens of texts is not worth using;
use it with a fit set from many texts (e.g. MP-PI passes gathered by a monitor through training,
``refit_from="mp-pi"``), and check its AS/IAS AUC against SP-PI's and Random's before trusting it.

Attention does not depend on the explained class, so one estimator describes the evidence the
prediction uses. For two classes with ``output="prob"`` or ``"log_odds"`` the other class's output is
an exact reflection (``p_c = 1 - p_y``; ``log_odds_c = -log_odds_y``), so examples that explain the
class the model does not predict are fitted and attributed with the sign flipped; otherwise the
fitted and attributed class is used as given (fit with the same kind of target you attribute).

Cost: ``"0"`` once fitted (the forward pass that makes the prediction also gives the attention).
The fitted weights are a small artefact (``L x H`` floats), saved and loaded as safetensors.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pi_lightning.attributors._attention import AttentionRowRecorder
from pi_lightning.attributors.base import Attributor, register
from pi_lightning.features import Features
from pi_lightning.inference import model_mode, token_budget_batches
from pi_lightning.result import Attribution

__all__ = ["AT2", "fit_head_weights"]


def _pearson(pred: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-example Pearson correlation over the valid ablations: ``(N, M)`` x3 -> ``(N,)``."""
    cnt = valid.sum(1, keepdim=True)
    pc = (pred - (pred * valid).sum(1, keepdim=True) / cnt) * valid
    yc = (y - (y * valid).sum(1, keepdim=True) / cnt) * valid
    cov = (pc * yc).sum(1)
    return cov / (pc.pow(2).sum(1).sqrt() * yc.pow(2).sum(1).sqrt() + 1e-8)


def fit_head_weights(
    head_features: Sequence[torch.Tensor],
    coalitions: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    *,
    non_negative: bool = False,
    num_iterations: int = 1000,
    learning_rate: float = 1e-3,
    batch_size: int = 512,
    max_grad_norm: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """AT2's linear estimator: head weights that make ``(2z - 1) X w`` correlate with the ablation outputs.

    Args:
        head_features: per example, ``X`` of shape ``(n, F)`` (feature x head).
        coalitions: per example, ``(M, n)`` booleans (True = feature kept).
        values: per example, ``(M,)`` outputs of the explained class under each coalition.
        non_negative: project the weights onto ``w >= 0`` after every step.
        num_iterations, learning_rate, batch_size, max_grad_norm: Adam with a cosine schedule,
            ``batch_size`` examples per step, gradient norm clipping.
        seed: seed of the example sampling (when there are more examples than ``batch_size``).

    Returns:
        ``(w, info)``: ``(F,)`` float32 weights with unit L1 norm, and ``info`` with ``examples``
        (used), ``skipped`` (examples whose outputs do not vary), ``ablations`` and ``correlation``
        (mean training Pearson correlation after fitting).

    Example:
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # 3 features, 2 heads
        >>> z = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
        >>> y = z[:, 0].double()  # only feature 0 matters; head 0 attends to it
        >>> w, info = fit_head_weights(
        ...     [X], [z], [y], non_negative=True, num_iterations=200, learning_rate=1e-2
        ... )
        >>> bool(w[0] > 0.9), round(info["correlation"], 3)
        (True, 1.0)
    """
    if not (len(head_features) == len(coalitions) == len(values)):
        raise ValueError(
            f"Got {len(head_features)} head-feature tensors, {len(coalitions)} coalition sets and "
            f"{len(values)} value sets: give one of each per example."
        )
    if not head_features:
        raise ValueError("No examples to fit AT2 on: give at least one example with ablations.")
    F = head_features[0].shape[-1]
    mats, ys, skipped = [], [], 0
    for i, (X, z, y) in enumerate(zip(head_features, coalitions, values, strict=False)):
        z = torch.as_tensor(z).bool()
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if (
            X.dim() != 2
            or X.shape[1] != F
            or z.dim() != 2
            or z.shape[1] != X.shape[0]
            or z.shape[0] != len(y)
        ):
            raise ValueError(
                f"Example {i}: expected head features (n, {F}), coalitions (M, n) and values (M,), got "
                f"{tuple(X.shape)}, {tuple(z.shape)} and {tuple(y.shape)}."
            )
        if len(y) < 2 or float(y.std()) <= 1e-12 * max(1.0, float(y.abs().max())):
            skipped += 1  # correlation is undefined when the output does not vary
            continue
        # (M, n) @ (n, F) -> (M, F): an ablation's prediction is its feature vector times w.
        mats.append(((2.0 * z.double() - 1.0) @ X.double()).float())
        ys.append(y.float())
    if not mats:
        raise ValueError(
            f"None of the {len(values)} examples has ablation outputs that vary; AT2 cannot learn from them. "
            "Use more or different examples (or more ablations)."
        )
    N, Mmax = len(mats), max(len(y) for y in ys)
    G = torch.zeros(N, Mmax, F)
    Y = torch.zeros(N, Mmax)
    V = torch.zeros(N, Mmax)
    for k, (g, y) in enumerate(zip(mats, ys, strict=False)):
        G[k, : len(y)], Y[k, : len(y)], V[k, : len(y)] = g, y, 1.0

    w = torch.nn.Parameter(torch.full((F,), 1.0 / F))
    opt = torch.optim.Adam([w], lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(num_iterations, 1))
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(num_iterations):
            idx = torch.randperm(N, generator=gen)[:batch_size] if batch_size < N else slice(None)
            loss = -_pearson(G[idx] @ w, Y[idx], V[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([w], max_grad_norm)
            opt.step()
            sched.step()
            if non_negative:
                with torch.no_grad():
                    w.clamp_(min=0)
    w = w.detach().clone()
    norm = float(w.abs().sum())
    if norm > 0:
        w /= norm
    corr = float(_pearson(G @ w, Y, V).mean())
    return w, {"examples": N, "skipped": skipped, "ablations": int(V.sum()), "correlation": corr}


@register
class AT2(Attributor):
    """AT2 for decoder-only classifiers: attention-head features with weights learned from ablations.

    Args:
        model, tokenizer, granularity, template, mask, output, max_tokens: see
            :class:`~pi_lightning.attributors.base.Attributor`.
        budget: masked forward passes (random ablations, duplicates run too) per training text in
            :meth:`fit` (default 32, AT2's), plus one unmasked pass per text; an explanation itself
            runs one forward pass per text whatever the budget.
        keep_prob: probability that a feature is kept in an ablation (AT2: 0.5).
        non_negative: constrain the head weights to be non-negative.
        num_iterations, learning_rate, batch_size: the estimator's optimiser (AT2: 1,000, 1e-3, 512).
        seed: seed of the random ablations and of the example sampling.
        weights: a saved estimator (path to a ``.safetensors`` file from :meth:`save`) or an
            ``(L, H)`` tensor; without it, call :meth:`fit` or :meth:`fit_from_attributions` first.

    Attributes:
        weights: ``(L, H)`` float32 head weights (``None`` until fitted or loaded).
        fit_info: what the last fit used and cost (examples, ablations, forward passes, seconds,
            training correlation).

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> at2 = AT2(tiny_classifier("gpt2", tokenizer=tok), tok, budget=8, num_iterations=50)
        >>> at2 = at2.fit(["a good movie", "a dull plot, really"])
        >>> tuple(at2.weights.shape), len(at2.attribute("a good movie")[0].scores)
        ((2, 4), 3)
    """

    name = "at2"
    cost = "0"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        budget: int = 32,
        keep_prob: float = 0.5,
        non_negative: bool = False,
        num_iterations: int = 1000,
        learning_rate: float = 1e-3,
        batch_size: int = 512,
        seed: int = 0,
        weights: str | Path | torch.Tensor | None = None,
        **kwargs,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        for key, val in (
            ("budget", budget),
            ("num_iterations", num_iterations),
            ("batch_size", batch_size),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{key} must be a positive int, got {val!r}.")
        if budget < 2:
            raise ValueError(f"budget must be at least 2 ablations (a correlation needs two), got {budget}.")
        if not isinstance(keep_prob, (int, float)) or not 0.0 < keep_prob < 1.0:
            raise ValueError(f"keep_prob must be a probability strictly between 0 and 1, got {keep_prob!r}.")
        if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
        self.budget = budget
        self.keep_prob = float(keep_prob)
        self.non_negative = bool(non_negative)
        self.num_iterations = num_iterations
        self.learning_rate = float(learning_rate)
        self.batch_size = batch_size
        self.seed = seed
        cfg = self.adapter.hf_model.config
        self.shape = (int(cfg.num_hidden_layers), int(cfg.num_attention_heads))
        self.weights: torch.Tensor | None = None
        self.fit_info: dict = {}
        if isinstance(weights, torch.Tensor):
            self._set_weights(weights, "the given tensor")
        elif weights is not None:
            self.load(weights)

    # -- features ----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.weights is not None

    def _set_weights(self, w: torch.Tensor, source: str) -> None:
        w = torch.as_tensor(w).detach().float().cpu()
        if tuple(w.shape) != self.shape:
            raise ValueError(
                f"AT2 weights from {source} have shape {tuple(w.shape)}, but this model has "
                f"{self.shape[0]} layers x {self.shape[1]} heads; fit AT2 on this model instead."
            )
        self.weights = w

    def _head_features(self, feats: Sequence[Features]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One forward pass per example: ``[(n_i, L, H)]`` head features and the final logits ``(N, C)``."""
        adapter = self.adapter
        lengths = [len(f.input_ids) for f in feats]
        X: list[torch.Tensor | None] = [None] * len(feats)
        finals: list[torch.Tensor | None] = [None] * len(feats)
        L, H = self.shape
        with model_mode(self.model):
            for batch in token_budget_batches(lengths, adapter.max_tokens):
                # (B, width) right-padded: token t of a sequence is column t.
                ids, mask = adapter.pad([feats[i].input_ids for i in batch], padding_side="right")
                width = ids.shape[1]
                with AttentionRowRecorder(self.model, mask) as rec:
                    logits = adapter.per_position_logits(ids, mask)
                adapter.forward_passes += len(batch)
                rows = rec.rows.cpu()
                if tuple(rows.shape[1:3]) != self.shape:
                    raise RuntimeError(
                        f"Recorded attention of shape {tuple(rows.shape[1:3])}, expected {self.shape}."
                    )
                for r, i in enumerate(batch):
                    f = feats[i]
                    finals[i] = logits[r, lengths[i] - 1].float().cpu()
                    owner = torch.full((width,), -1, dtype=torch.long)
                    for j, (a, b) in enumerate(f.spans):
                        owner[a:b] = j
                    keep = owner >= 0
                    # (L, H, T) -> (T, L*H): one row of head attentions per token, summed per feature.
                    per_token = rows[r].reshape(L * H, width).T
                    x = torch.zeros(f.n, L * H).index_add_(0, owner[keep], per_token[keep])
                    # (n, L*H) -> (n, L, H)
                    X[i] = x.view(f.n, L, H)
        return X, torch.stack(finals)  # type: ignore[arg-type]

    def _sign(self, target: int, predicted: int) -> float:
        """-1 where the explained class's output exactly mirrors the predicted class's (two classes)."""
        mirrored = self.adapter.num_labels == 2 and self.output in ("prob", "log_odds")
        return -1.0 if mirrored and target != predicted else 1.0

    # -- fitting -----------------------------------------------------------------------------
    def _fit(self, X, coalitions, values, targets, finals, source: str, passes: int, t0: float) -> None:
        preds = finals.argmax(-1).tolist()
        signs = [self._sign(c, p) for c, p in zip(targets, preds, strict=False)]
        L, H = self.shape
        # (n, L, H) -> (n, L*H)
        flat = [x.reshape(x.shape[0], L * H) for x in X]
        w, info = fit_head_weights(
            flat,
            coalitions,
            [s * torch.as_tensor(v, dtype=torch.float64) for s, v in zip(signs, values, strict=False)],
            non_negative=self.non_negative,
            num_iterations=self.num_iterations,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        if info["skipped"]:
            warnings.warn(
                f"AT2: {info['skipped']} of {len(values)} examples were skipped because their ablation "
                "outputs do not vary.",
                UserWarning,
                stacklevel=3,
            )
        # (L*H,) -> (L, H)
        self.weights = w.view(L, H)
        self.fit_info = {
            **info,
            "source": source,
            "forward_passes": passes,
            "seconds": time.perf_counter() - t0,
        }

    def fit(self, texts, target="predicted") -> AT2:
        """Fit the head weights from AT2's own random ablations of ``texts``.

        Each of the ``budget`` ablations per text keeps every feature with probability
        ``keep_prob``; the explained class's output is read at the final position. Costs
        ``budget + 1`` forward passes per text (``fit_info["forward_passes"]``).

        Args:
            texts: texts (or :class:`~pi_lightning.features.Features`) to learn from.
            target: the explained class: ``"predicted"``, a class index, or one per text.

        Returns:
            ``self``, fitted.
        """
        t0 = time.perf_counter()
        feats = self.featurize(texts)
        X, finals = self._head_features(feats)
        targets = self.resolve_targets(target, len(feats), finals)
        gen = torch.Generator().manual_seed(self.seed)
        coalitions, seqs = [], []
        for f in feats:
            z = torch.rand((self.budget, f.n), generator=gen) < self.keep_prob
            coalitions.append(z)
            seqs.extend(self.masker(f, z.numpy())[0])
        logits = self.adapter.final_logits(seqs)
        values = [
            self.outputs(logits[k * self.budget : (k + 1) * self.budget], c) for k, c in enumerate(targets)
        ]
        self._fit(X, coalitions, values, targets, finals, "ablations", len(feats) + len(seqs), t0)
        return self

    def _check_mppi(self, attributions) -> None:
        if isinstance(attributions, Attribution):
            raise TypeError(
                "fit_from_attributions expects a list of Attribution results, got a single one: wrap it in "
                "a list."
            )
        if not attributions:
            raise ValueError(
                "fit_from_attributions got no attributions; give MP-PI results of at least one example."
            )
        for k, a in enumerate(attributions):
            if not isinstance(a, Attribution):
                raise TypeError(
                    f"Item {k} is a {type(a).__name__}, expected an Attribution (an MP-PI result)."
                )
            if "coalitions" not in a.extras or "values" not in a.extras:
                raise ValueError(
                    f"Attribution {k} (method {a.method!r}) has no extras['coalitions'] and "
                    "extras['values']: AT2 learns from MP-PI results, which carry the (coalition, output) "
                    "pairs of their masked passes."
                )
            if a.output != self.output:
                raise ValueError(
                    f"Attribution {k} holds {a.output!r} values but this AT2 attributes {self.output!r}: "
                    f"build AT2 with output={a.output!r} (the same output as MP-PI)."
                )

    def _from_attributions(self, attributions):
        t0 = time.perf_counter()
        self._check_mppi(attributions)
        feats = [a.features for a in attributions]
        X, finals = self._head_features(feats)
        coalitions = [
            torch.as_tensor(np.asarray(a.extras["coalitions"]), dtype=torch.bool) for a in attributions
        ]
        values = [torch.as_tensor(np.asarray(a.extras["values"]), dtype=torch.float64) for a in attributions]
        targets = [int(a.target) for a in attributions]
        self._fit(X, coalitions, values, targets, finals, "mp-pi", len(feats), t0)
        return feats, X, finals, targets

    def fit_from_attributions(self, attributions: Sequence[Attribution]) -> AT2:
        """Fit the head weights from MP-PI results: their masked passes are AT2's ablations.

        Each result's ``extras["coalitions"]`` (``(M, n)`` bool) and ``extras["values"]`` (``(M,)``
        outputs of its target class) are used as they are; only the head features of each unmasked
        input are computed, one forward pass per example.

        Args:
            attributions: MP-PI :class:`~pi_lightning.result.Attribution` results (same ``output``).

        Returns:
            ``self``, fitted.
        """
        self._from_attributions(attributions)
        return self

    def fit_and_attribute(self, attributions: Sequence[Attribution]) -> list[Attribution]:
        """Refit on MP-PI results and return AT2's attributions of the same examples and targets.

        The head features of the one pass per example serve both the fit and the attributions, so
        a callback that refits at every evaluation spends one forward pass per probe example.
        """
        feats, X, finals, targets = self._from_attributions(attributions)
        return self._results(feats, X, finals, targets)

    # -- attribution -------------------------------------------------------------------------
    def _results(self, feats, X, finals, targets) -> list[Attribution]:
        w = self.weights.double().reshape(-1)
        out = []
        for f, x, lg, c in zip(feats, X, finals, targets, strict=False):
            sign = self._sign(c, int(lg.argmax()))
            # (n, L, H) -> (n, L*H)
            scores = sign * (x.double().reshape(f.n, -1) @ w)
            out.append(self.result(f, c, lg, scores, forward_passes=1.0, extras={"head_features": x}))
        return out

    def attribute(self, texts, target="predicted") -> list[Attribution]:
        """AT2 attributions: one forward pass per text, scores ``X w`` (in ranking units, not ``output``
        units).

        ``extras["head_features"]`` holds each example's ``(n, L, H)`` attention features.
        """
        if self.weights is None:
            raise RuntimeError(
                "AT2 has no head weights yet: call fit(texts), fit_from_attributions(mppi_results), or "
                "load(path) / pass weights=path first."
            )
        return super().attribute(texts, target)

    def predict(self, feats) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The inference pass, which also gives each example's ``(n, L, H)`` head features (the state)."""
        X, finals = self._head_features(feats)
        return finals, X

    def explain(self, feats, targets, finals, X) -> list[Attribution]:
        return self._results(feats, X, finals, targets)

    # -- artefact ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save the head weights (``(L, H)`` float32) and their provenance as a safetensors file."""
        from safetensors.torch import save_file

        if self.weights is None:
            raise RuntimeError("AT2 has no head weights to save: fit it first.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "method": self.name,
            "num_layers": str(self.shape[0]),
            "num_heads": str(self.shape[1]),
            "output": self.output,
            "non_negative": str(self.non_negative),
            **{f"fit_{k}": str(v) for k, v in self.fit_info.items()},
        }
        save_file({"weights": self.weights.contiguous()}, str(path), metadata=meta)
        return path

    def load(self, path: str | Path) -> AT2:
        """Load head weights saved by :meth:`save` (checked against this model's layers and heads)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No AT2 weights file at {path}: give the path that AT2.save wrote.")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if "weights" not in fh.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise ValueError(f"{path} holds no 'weights' tensor; it was not written by AT2.save.")
            w = fh.get_tensor("weights")
        self._set_weights(w, str(path))
        if meta.get("output", self.output) != self.output:
            warnings.warn(
                f"AT2 weights in {path} were fitted on {meta['output']!r} outputs; this AT2 attributes "
                f"{self.output!r}.",
                UserWarning,
                stacklevel=2,
            )
        self.fit_info = {k[4:]: v for k, v in meta.items() if k.startswith("fit_")}
        return self

"""Multi-Pass Progressive Inference (MP-PI), the paper's section 3.2 and Algorithm 1.

Each pass runs the model on one masked input and reads the intermediate prediction at the end of
every active feature: the prediction on the prefix coalition "active features up to here". The
input masks are drawn from the optimised distribution P' of :mod:`pi_lightning.attributors._shapley` (or from
the Shapley distribution itself, the paper's Table 4 ablation), with the S+ trick (every feature
after the last sampled one is active too). The collected coalitions are deduplicated, weighted so
that they follow the Shapley distribution, and Kernel SHAP's constrained weighted least squares
(Eqn 11) turns them into attributions with phi_0 = f(empty) and sum(phi) = f(N) - f(empty).

Conventions, shared with SP-PI: the value of a coalition is the head's output at the last token of
its last active feature (nothing after it is in the prefix); f(empty) is read at the last token of
the fixed context before the text, or from the fully masked input when there is none; f(N) at the
end of the last feature of the unmasked input. Identical masked inputs give identical outputs, so
each distinct sampled mask is run once.

Weights (``weights``). The default, ``"inclusion"``, weights each distinct collected coalition U by
P*(U) / pi(U), pi(U) the chance that the draws collect it at least once (Horvitz-Thompson; 1 for the
unmasked input's prefixes, which are run anyway, and for every coalition once all masks there are
were drawn, so that a short text's fit is then exact). ``"counts"`` (the paper's importance
weights, the default until issue 27) weights U by P*(U) / P^D(U) times its multiplicity among the
draws, exactly the estimate of running every sample; its weights keep the draws' noise however many
there are. Against exact Shapley values of 6-9-word sentences (validation split, the benchmark
model) the inclusion weights cut the relative error at 2n / 4n / 8n passes and raised the rank
correlation at 4n / 8n at no cost in passes (benchmarks/results/RESULTS.md, issue 27).

Budget. The budget counts *masked passes actually run*: masks are drawn until that many distinct
(non-full) masks have been drawn, so MP-PI runs exactly as many masked forward passes as its budget
says, plus the unmasked input and the empty input where no context precedes the text (all recorded
in ``Attribution.forward_passes``). Where fewer distinct masks exist (short texts) it runs every one
there is. P' is concentrated, so counting masks *drawn* would run far fewer passes than the budget
says. The stopping rule keeps every draw up to the one that brought the last new mask (``D``
draws in all, the number the inclusion probabilities and the count weights use).

Randomness. Each text gets its own generator (:func:`~pi_lightning.attributors.base.text_rng`),
seeded from ``seed`` and a digest of the text's tokens and feature spans: a text's masks (and so its
attribution) depend only on the seed and the text, not on which other texts share the call, their
order, or how a monitor chunks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pi_lightning.attributors._shapley import mask_distribution
from pi_lightning.attributors.base import Attributor, budget_count, parse_budget, register, text_rng
from pi_lightning.features import Features
from pi_lightning.result import Attribution

__all__ = ["MPPI", "kernel_shap_regression"]


def kernel_shap_regression(
    coalitions: Sequence[np.ndarray],
    values: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    base: Sequence[float],
    full: Sequence[float],
) -> list[np.ndarray]:
    """Kernel SHAP's constrained weighted least squares (Eqn 11), batched over examples.

    Minimises ``sum_U w_U (v_U - phi_0 - sum_{i in U} phi_i)^2`` with ``phi_0 = base`` and
    ``sum(phi) = full - base`` imposed exactly (the last feature is eliminated), in float64 with
    an SVD-based least-squares solver (no normal equations, no explicit inverse). Examples with
    the same number of features are solved in one batched call.

    Args:
        coalitions: per example ``(M, n)`` bool, neither empty nor full.
        values: per example ``(M,)`` outputs.
        weights: per example ``(M,)`` non-negative weights.
        base: per example f(empty).
        full: per example f(N).

    Returns:
        Per example the ``(n,)`` float64 attributions.

    Example:
        >>> Z = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], bool)
        >>> v = 1.0 + Z @ np.array([0.5, -1.0, 2.0])
        >>> kernel_shap_regression([Z], [v], [np.ones(3)], [1.0], [2.5])[0].round(6).tolist()
        [0.5, -1.0, 2.0]
    """
    out: list[np.ndarray | None] = [None] * len(coalitions)
    by_n: dict[int, list[int]] = {}
    for e, z in enumerate(coalitions):
        by_n.setdefault(int(np.shape(z)[1]), []).append(e)
    for n, idx in by_n.items():
        delta = np.array([full[e] - base[e] for e in idx], dtype=np.float64)
        if n == 1:
            for e, d in zip(idx, delta, strict=False):
                out[e] = np.array([d])
            continue
        m = max(len(values[e]) for e in idx)
        # Per example: (M, n) coalitions -> (M, n-1) design after eliminating phi_n, padded to
        # (m, n-1) with zero rows (zero weight) so that all examples solve in one batch.
        A = np.zeros((len(idx), m, n - 1))
        b = np.zeros((len(idx), m, 1))
        for r, e in enumerate(idx):
            z = np.asarray(coalitions[e], dtype=np.float64)
            sw = np.sqrt(np.asarray(weights[e], dtype=np.float64))
            y = np.asarray(values[e], dtype=np.float64) - base[e] - z[:, -1] * delta[r]
            A[r, : len(z)] = sw[:, None] * (z[:, :-1] - z[:, -1:])
            b[r, : len(z), 0] = sw * y
        beta = torch.linalg.lstsq(torch.from_numpy(A), torch.from_numpy(b), driver="gelsd").solution
        # (B, n-1, 1) -> (B, n-1)
        beta = beta.reshape(len(idx), n - 1).numpy()
        for r, e in enumerate(idx):
            out[e] = np.concatenate([beta[r], [delta[r] - beta[r].sum()]])
    return out  # type: ignore[return-value]


@register
class MPPI(Attributor):
    """Multi-Pass Progressive Inference.

    Args:
        model: a transformers decoder-only ``*ForSequenceClassification`` (or its peft wrapper).
        tokenizer: its fast tokenizer.
        budget: masked forward passes actually run per text (distinct masked inputs): an int, or a
            multiple of the number of features n such as ``"2n"`` (the paper's setting, the
            default). Besides them MP-PI runs the unmasked input, and the empty input where no
            context precedes the text; a text with fewer distinct masks than the budget runs all of
            them. ``Attribution.forward_passes`` records what ran.
        seed: seed of the private generators that draw the masks, one per text, derived from the
            seed and the text (default 0; ``None``: fresh entropy). The global torch / numpy random
            state is never touched.
        use_splus: activate every feature after the last sampled one (section 3.2.4).
        distribution: ``"optimized"`` (P' from Eqn 16) or ``"shapley"`` (draw inputs from P*,
            Table 4's ablation).
        defensive: with ``"optimized"``, the fraction of inputs drawn from P* mixed into Eqn 16's
            solution (see :func:`~pi_lightning.attributors._shapley.mask_distribution`). The default
            0.7 keeps the regression weights even; 0.05 (the earlier default) reproduces the
            earlier attributions but is several times less accurate for texts of 20 or more
            features.
        weights: ``"inclusion"`` (the default: Horvitz-Thompson weights P*(U) / pi(U) of the distinct
            collected coalitions, exact once every mask is run) or ``"counts"`` (the paper's
            importance weights times each coalition's multiplicity; the default until issue 27).
        **kwargs: the base-class settings (granularity, template, mask, output, max_tokens).

    Every :class:`~pi_lightning.result.Attribution` carries ``extras["coalitions"]`` (bool
    ``(M, n)``: the empty coalition, the unique collected ones, the full one),
    ``extras["values"]`` (float64 ``(M,)``, the attributed output for each) and
    ``extras["weights"]`` (float64 ``(M,)``, the regression weights; ``inf`` for the empty and
    full coalitions, which are Kernel SHAP's exact constraints).

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> mp = MPPI(tiny_classifier("gpt2", tokenizer=tok), tok, seed=0)
        >>> [a] = mp.attribute("a good movie", target=1)
        >>> bool(abs(a.scores.sum() - (a.extras["values"][-1] - a.base_value)) < 1e-9)
        True
    """

    name = "mp-pi"
    cost = "2n"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        budget: int | str = "2n",
        seed: int | None = 0,
        use_splus: bool = True,
        distribution: str = "optimized",
        defensive: float = 0.7,
        weights: str = "inclusion",
        **kwargs,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._mult, self._fixed = parse_budget(budget, "masked passes")
        self.budget = budget
        if distribution not in ("optimized", "shapley"):
            raise ValueError(f"distribution must be 'optimized' or 'shapley', got {distribution!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}.")
        if (
            isinstance(defensive, bool)
            or not isinstance(defensive, (int, float))
            or not 0.0 <= defensive < 1.0
        ):
            raise ValueError(
                f"defensive must be a fraction in [0, 1) of inputs drawn from the Shapley distribution, "
                f"got {defensive!r}; 0.7 is the default, 0.05 the earlier one."
            )
        self.defensive = float(defensive)
        if weights not in ("counts", "inclusion"):
            raise ValueError(
                f"weights must be 'counts' (importance weights times each coalition's multiplicity, "
                f"the paper's) or 'inclusion' (Horvitz-Thompson: P*(U) over the chance U was collected), "
                f"got {weights!r}."
            )
        self.weights = weights
        self.seed = seed
        self.use_splus = bool(use_splus)
        self.distribution = distribution
        # Instance cost string in the paper's notation: "2n" by default, "300x" for a fixed count.
        self.cost = f"{self._mult:g}n" if self._mult is not None else f"{self._fixed}x"

    def passes(self, n: int) -> int:
        """The budget for a text of ``n`` features: masked passes run."""
        if n < 2:
            return 0
        return budget_count((self._mult, self._fixed), n)

    def forward_equivalents(self, n: int) -> float:
        return float(self.passes(n))

    # -- sampling and passes ------------------------------------------------------------------
    def draw(self, dist, budget: int, rng: np.random.Generator) -> np.ndarray:
        """The masks drawn for one text: ``(D, n)`` bool, duplicates included.

        Draws until ``budget`` distinct non-full masks have appeared (at most the number of masks
        there are: ``2^(n-1) - 1`` with S+, whose inputs always keep the last feature, ``2^n - 2``
        without), cut right after the draw that brought the last one; it stops early, with fewer,
        after ``64 x budget`` draws (P' puts almost no mass on some masks).
        """
        n = dist.n
        support = 2 ** (n - 1) - 1 if dist.splus else 2**n - 2
        want = budget if n > 60 else min(budget, support)
        chunks, seen, total, cap = [], set(), 0, 64 * want
        while len(seen) < want and total < cap:
            d = dist.sample(max(want, 16), rng)
            keys = np.packbits(d, axis=1)
            # (D, bytes) -> one opaque key per row, for np.unique's first occurrences.
            rows = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).reshape(-1)
            _, first = np.unique(rows, return_index=True)
            first = np.sort(first)
            new = [r for r in first if not d[r].all() and rows[r].tobytes() not in seen]
            if len(seen) + len(new) >= want:
                d = d[: new[want - len(seen) - 1] + 1]
                new = new[: want - len(seen)]
            seen.update(rows[r].tobytes() for r in new)
            chunks.append(d)
            total += len(d)
        return np.concatenate(chunks)

    def predict(self, feats) -> tuple[torch.Tensor, tuple[list[dict], list[torch.Tensor]]]:
        """The one batched pass: every unmasked input (read at the context token, every feature end and
        the final token), the empty input where no context precedes the text, and every masked input
        (read at the end of each active feature). The state is ``(plans, logits)``."""
        seqs: list[list[int]] = []
        positions: list[list[int]] = []
        plans = []
        for f in feats:
            n = f.n
            plan = {"n": n}
            # Unmasked input: the context token (if any), every feature end, the final token.
            plan["unmasked"] = len(seqs)
            pre = [f.context_end - 1] if f.context_end > 0 else []
            seqs.append(list(f.input_ids))
            positions.append(pre + list(f.ends) + [len(f.input_ids) - 1])
            if f.context_end == 0:
                (s,), ends = self.masker(f, np.zeros((1, n), dtype=bool))
                plan["empty"] = len(seqs)
                seqs.append(s)
                positions.append([int(ends[0, -1])])
            B = self.passes(n)
            if B:
                dist = mask_distribution(n, self.use_splus, self.distribution, defensive=self.defensive)
                draws = self.draw(dist, B, text_rng(self.seed, f))
                masks, counts = np.unique(draws, axis=0, return_counts=True)
                full = masks.all(1)
                # The weights divide by the number of draws.
                plan["dist"], plan["B"] = dist, len(draws)
                plan["full_count"] = int(counts[full].sum())
                masks, counts = masks[~full], counts[~full]
                plan["masks"], plan["counts"] = masks, counts
                # Every input mask there is was drawn (short texts): every coalition is known.
                plan["exhausted"] = len(masks) == (2 ** (n - 1) - 1 if dist.splus else 2**n - 2)
                if len(masks):
                    mseqs, mends = self.masker(f, masks)
                    plan["first"] = len(seqs)
                    seqs.extend(mseqs)
                    # Read each masked input at the end of each of its active features.
                    positions.extend(mends[r][masks[r]].tolist() for r in range(len(masks)))
            plans.append(plan)
        logits = self.adapter.forward_positions(seqs, positions)
        return torch.stack([logits[p["unmasked"]][-1] for p in plans]), (plans, logits)

    def _gather(self, f: Features, plan, logits, c: int):
        """Unique coalitions, their values and weights, f(empty), f(N) for one example."""
        n = f.n
        un = self.outputs(logits[plan["unmasked"]], c)
        if f.context_end > 0:
            f0, prefix_vals = float(un[0]), un[1:-1]
        else:
            f0, prefix_vals = float(self.outputs(logits[plan["empty"]], c)[0]), un[:-1]
        fN = float(prefix_vals[-1])
        tri = np.arange(n)[None, :] <= np.arange(n)[:, None]  # (n, n): row l = prefix 1..l
        blocks_z, blocks_v, blocks_c = [], [], []
        # With inclusion weights the unmasked input's prefixes (run anyway) are always data.
        if plan.get("full_count") or (self.weights == "inclusion" and "dist" in plan):
            blocks_z.append(tri)
            blocks_v.append(prefix_vals.numpy())
            blocks_c.append(np.full(n, max(plan["full_count"], 1), dtype=np.float64))
        masks = plan.get("masks")
        if masks is not None and len(masks):
            first = plan["first"]
            for r, (z, m) in enumerate(zip(masks, plan["counts"], strict=False)):
                act = np.nonzero(z)[0]
                # (|act|, n): the prefix coalitions of z ending at each active feature.
                blocks_z.append(z[None, :] & tri[act])
                blocks_v.append(self.outputs(logits[first + r], c).numpy())
                blocks_c.append(np.full(len(act), m, dtype=np.float64))
        if blocks_z:
            Z = np.concatenate(blocks_z)
            V = np.concatenate(blocks_v)
            Cn = np.concatenate(blocks_c)
            keep = ~Z.all(1)  # the full coalition is a constraint, not data
            Z, V, Cn = Z[keep], V[keep], Cn[keep]
            # Same coalition from several passes: same prefix tokens, so the same value up to
            # batching round-off; merge them (mean value, summed multiplicity).
            uniq, inv = np.unique(np.packbits(Z, axis=1), axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            cnt = np.bincount(inv, weights=Cn)
            vals = np.bincount(inv, weights=V * Cn) / cnt
            Zu = np.unpackbits(uniq, axis=1, count=n).astype(bool)
            if self.weights == "inclusion":
                w = self._inclusion_weights(plan["dist"], Zu, plan["B"], plan["exhausted"])
            else:
                w = plan["dist"].coalition_weights(Zu) * cnt / plan["B"]
        else:
            Zu, vals, w = np.zeros((0, n), bool), np.zeros(0), np.zeros(0)
        return Zu, vals, w, f0, fN, un

    @staticmethod
    def _inclusion_weights(dist, coalitions: np.ndarray, draws: int, exhausted: bool = False) -> np.ndarray:
        """Horvitz-Thompson weights ``P*(U) / pi(U)`` of the distinct collected coalitions.

        ``pi(U) = 1 - (1 - q(U))^D`` is the chance that U is among the prefixes of at least one of
        the ``D`` drawn inputs (``q``: ``MaskDistribution.coalition_probabilities``), and 1 for the
        unmasked input's prefixes ``{1..l}``, which are run whatever is drawn. The weighted squared
        residuals are then an unbiased estimate of the Shapley-weighted objective that counts each
        coalition once, whatever its multiplicity; once every input mask has been drawn, every pi is
        near 1 and the fit approaches the exact one (the multiplicity-weighted fit keeps the draws'
        noise in its weights however many there are). When every input mask there is was drawn
        (``exhausted``), every coalition is known: pi = 1 and the fit is the exact Shapley values.
        """
        p_u, q_u = dist.coalition_probabilities(coalitions)
        # 1 - (1 - q)^D without cancellation for small q.
        pi = -np.expm1(draws * np.log1p(-np.clip(q_u, 0.0, 1.0 - 1e-16)))
        z = coalitions
        prefix = z[:, 0] & (z[:, :-1] >= z[:, 1:]).all(1)  # {1..l}: the unmasked input's prefixes
        pi = np.where(prefix | exhausted, 1.0, pi)
        return np.where(pi > 0, p_u / np.where(pi > 0, pi, 1.0), 0.0)

    def collect(self, features_list, targets) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The masked passes of MP-PI without the regression.

        Args:
            features_list: texts or :class:`~pi_lightning.features.Features`.
            targets: ``"predicted"``, a class index, or one per text.

        Returns:
            Per example ``(coalitions, values, weights)``: bool ``(M, n)`` (empty first, full
            last), float64 ``(M,)`` outputs of the target class, float64 ``(M,)`` regression
            weights (``inf`` for the empty and full constraints).
        """
        feats = self.featurize(features_list)
        finals, state = self.predict(feats)
        resolved = self.resolve_targets(targets, len(feats), finals)
        return [
            (a.extras["coalitions"], a.extras["values"], a.extras["weights"])
            for a in self._explain(feats, resolved, finals, state, regress=False)
        ]

    def explain(self, feats, targets, finals, state) -> list[Attribution]:
        return self._explain(feats, targets, finals, state, regress=True)

    def _explain(self, feats, targets, finals, state, regress: bool) -> list[Attribution]:
        """Coalitions, values and weights of each example (:meth:`_gather`), then Kernel SHAP's
        regression (``regress``; :meth:`collect` skips it)."""
        plans, logits = state
        gathered = [self._gather(f, p, logits, c) for f, p, c in zip(feats, plans, targets, strict=False)]
        if regress:
            phis = kernel_shap_regression(
                [g[0] for g in gathered],
                [g[1] for g in gathered],
                [g[2] for g in gathered],
                [g[3] for g in gathered],
                [g[4] for g in gathered],
            )
        else:
            phis = [np.full(f.n, np.nan) for f in feats]
        results = []
        for f, p, c, (Z, v, w, f0, fN, _un), phi in zip(feats, plans, targets, gathered, phis, strict=False):
            n = f.n
            coal = np.concatenate([np.zeros((1, n), bool), Z, np.ones((1, n), bool)])
            vals = np.concatenate([[f0], v, [fN]])
            wts = np.concatenate([[np.inf], w, [np.inf]])
            masks = p.get("masks")
            run = 1 + ("empty" in p) + (0 if masks is None else len(masks))
            results.append(
                self.result(
                    f,
                    c,
                    logits[p["unmasked"]][-1],
                    torch.as_tensor(phi, dtype=torch.float64),
                    base_value=f0,
                    forward_passes=float(run),
                    extras={
                        "coalitions": torch.from_numpy(coal),
                        "values": torch.from_numpy(vals),
                        "weights": torch.from_numpy(wts),
                        "sampled_masks": p.get("B", 0),
                        "masked_passes": 0 if masks is None else len(masks),
                    },
                )
            )
        return results

"""shap's Permutation and Partition explainers as attributors: the peers a user would pick, on the same game.

Both explain :class:`~pi_lightning.attributors.kernelshap.CoalitionGame`, the game Kernel SHAP explains:
a coalition of features is masked with the shared :class:`~pi_lightning.masking.Masker` and scored by
the attributed output of the target class, each distinct coalition run once, the full input read from
the prediction pass. shap sees the model as a function of a binary vector over the features (the input
``ones(n)``, the background ``zeros(n)``), so the values are Shapley (Permutation) and Owen (Partition)
values of exactly that game, and ``Attribution.forward_passes`` counts the passes that ran.

* ``shap-permutation``: :class:`shap.PermutationExplainer` with an independent masker: random feature
  orders, each walked forwards (adding features) and backwards (removing them), shap's antithetic
  scheme. One such pair of walks costs ``2n`` passes here (the unmasked input and the empty coalition
  once, ``2(n - 1)`` distinct coalitions), so a budget of ``B`` passes runs ``max(1, (B - 2) // (2n -
  2))`` permutations: at least one (``2n`` passes), whatever the budget.
* ``shap-partition``: :class:`shap.PartitionExplainer` (Owen values over a hierarchy of features) with
  the hierarchy shap's ``Text`` masker builds for text (adjacent pieces merged by its punctuation and
  spacing heuristic, ``shap.maskers._text.partition_tree``), applied to the features' text; shap's
  budget ``max_evals`` is the budget in passes (rounded down to even). Deterministic: it draws nothing.

shap is an optional dependency (``pip install shap``, or the ``[shap]`` extra); it is imported when an
explainer is built. The permutation draws of a text come from a seed made from ``seed`` and the text
(:func:`~pi_lightning.attributors.base.text_rng`); shap draws them from NumPy's global generator,
whose state is saved and restored around each text.
"""

from __future__ import annotations

import numpy as np

from pi_lightning.attributors.base import budget_count, parse_budget, register, text_rng
from pi_lightning.attributors.kernelshap import CoalitionGame, GameAttributor
from pi_lightning.features import Features

__all__ = ["ShapPartitionAttributor", "ShapPermutationAttributor"]


def _import_shap():
    try:
        import shap
    except ImportError as err:
        raise ImportError(
            "The shap-permutation and shap-partition methods run shap's explainers: `pip install shap` "
            "(or `pip install pi-lightning[shap]`)."
        ) from err
    return shap


class _ShapExplainer(GameAttributor):
    """What the two shap explainers share: the budget, the game, the passes that ran."""

    cost = "2n"

    def __init__(self, model, tokenizer, *, budget: int | str = "2n", **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._budget = parse_budget(budget, "forward passes")
        self._shap = _import_shap()
        self.budget = budget
        mult, fixed = self._budget
        self.cost = f"{mult:g}n" if fixed is None else f"{fixed}x"

    def passes(self, n: int) -> int:
        """The budget in forward passes for a text of ``n`` features."""
        return budget_count(self._budget, n, minimum=2)

    def estimate(self, game: CoalitionGame, features: Features) -> tuple[np.ndarray, dict]:
        """The subclass's ``shap_values(game, features)``: the ``(n,)`` values of its shap explainer."""
        return self.shap_values(game, features), {}


@register
class ShapPermutationAttributor(_ShapExplainer):
    """shap's Permutation explainer (antithetic random orders) on the shared coalition game.

    Args:
        budget: forward passes per text, an int or a multiple of the number of features n (default
            ``"2n"``): ``max(1, (budget - 2) // (2n - 2))`` forward-and-backward permutations run, each
            ``2(n - 1)`` new coalitions after the unmasked input and the empty one (at least one
            permutation, ``2n`` passes). ``Attribution.forward_passes`` records the passes that ran.
        seed: seed of the permutations (default 0); each text's permutations come from the seed and the
            text (:func:`~pi_lightning.attributors.base.text_rng`).
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> sp = ShapPermutationAttributor(tiny_classifier("gpt2", tokenizer=tok), tok)
        >>> [a] = sp.attribute("a good movie", target=1)
        >>> abs(float(a.scores.sum()) - (a.extras["f_full"] - a.base_value)) < 1e-9, a.forward_passes
        (True, 6.0)
    """

    name = "shap-permutation"

    def __init__(self, model, tokenizer, *, budget: int | str = "2n", seed: int = 0, **kwargs) -> None:
        super().__init__(model, tokenizer, budget=budget, **kwargs)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        self.seed = seed

    def permutations(self, n: int) -> int:
        """Forward-and-backward permutations run on a text of ``n >= 2`` features."""
        return max(1, (self.passes(n) - 2) // (2 * n - 2))

    def shap_values(self, game: CoalitionGame, features: Features) -> np.ndarray:
        shap, n = self._shap, features.n
        seed = int(text_rng(self.seed, features).integers(2**32))
        state = np.random.get_state()  # shap seeds and draws from NumPy's global generator
        try:
            explainer = shap.PermutationExplainer(game, shap.maskers.Independent(np.zeros((1, n))), seed=seed)
            out = explainer(np.ones((1, n)), max_evals=self.permutations(n) * (2 * n + 1), silent=True)
        finally:
            np.random.set_state(state)
        return np.asarray(out.values[0], dtype=np.float64)


def text_partition_tree(features: Features) -> np.ndarray:
    """The hierarchy of features shap's ``Text`` masker would build: its partition tree (a SciPy linkage
    matrix ``(n - 1, 4)``) over the features' text pieces, each with the space before it.

    Example:
        >>> from pi_lightning.features import Featurizer
        >>> from pi_lightning.testing import tiny_tokenizer
        >>> text_partition_tree(Featurizer(tiny_tokenizer("gpt2"))("a good movie")).shape
        (2, 4)
    """
    from shap.maskers._text import partition_tree

    pieces = [(" " if sp else "") + t for t, sp in zip(features.texts, features.space_before, strict=True)]
    return partition_tree(pieces, [])


@register
class ShapPartitionAttributor(_ShapExplainer):
    """shap's Partition explainer (Owen values over shap's text hierarchy) on the shared coalition game.

    Args:
        budget: forward passes per text (shap's ``max_evals``, rounded down to an even number since shap
            expands its tree two coalitions at a time; at least 4), an int or a multiple of the number
            of features n (default ``"2n"``). Fewer run once the whole tree is explored;
            ``Attribution.forward_passes`` records the passes that ran.
        **kwargs: the shared :class:`~pi_lightning.attributors.base.Attributor` settings.

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> sp = ShapPartitionAttributor(tiny_classifier("gpt2", tokenizer=tok), tok)
        >>> [a] = sp.attribute("a good movie", target=1)
        >>> abs(float(a.scores.sum()) - (a.extras["f_full"] - a.base_value)) < 1e-6
        True
    """

    name = "shap-partition"

    def shap_values(self, game: CoalitionGame, features: Features) -> np.ndarray:
        shap, n = self._shap, features.n
        masker = shap.maskers.Partition(np.zeros((1, n)), clustering=text_partition_tree(features))
        explainer = shap.PartitionExplainer(game, masker)
        # shap expands the tree two coalitions at a time: an even max_evals keeps the passes within budget.
        out = explainer(np.ones((1, n)), max_evals=max(2 * (self.passes(n) // 2), 4), silent=True)
        return np.asarray(out.values[0], dtype=np.float64)

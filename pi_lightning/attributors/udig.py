"""Uniform Discretized Integrated Gradients (UDIG) and its predecessor DIG, for decoder-only classifiers.

Integrated Gradients integrates the gradient along the straight line from a baseline embedding to
each input token's embedding, but almost every point of that line is far from any real word. UDIG
(Roy et al., 2024; github swarnava-sr/UDIG) and DIG (Sanyal & Ren, 2021; github INK-USC/DIG)
instead take the gradient at points that are (nearly) vocabulary embeddings:

* ``m`` segments: ``m - 1`` evenly spaced points ``b + (j/m)(x - b)`` on the straight line from the
  baseline ``b`` to the input ``x``; each is replaced by an *anchor* chosen among its ``k`` nearest
  vocabulary embeddings (L2), walking from the input towards the baseline.
* The anchor is the candidate closest to its monotonised copy (``"greedy"``) or the one with the
  most monotone dimensions (``"maxcount"``); it is then *monotonised*: every dimension that is not
  between the baseline and the previous path point is reset onto the straight line (clamped into
  that interval). Every coordinate therefore moves monotonically from ``b`` to ``x``.
* DIG (``path="dig"``) differs only in where candidates come from: the ``k`` nearest words of the
  previous anchor word (a walk on the kNN graph) instead of the nearest words of the line point.
* Attribution of a token: ``sum_j grad f(P_j) . (P_{j+1} - P_j)`` over the path ``P_0 = b, ...,
  P_m = x`` (the left Riemann sum of DIG's code, Captum's ``riemann_left`` on a straight line),
  summed over the embedding dimensions and then over the tokens of each feature. The sum of all
  attributions approaches ``f(x) - f(baseline input)`` as ``m`` grows (completeness).

All text tokens move along their paths together (step ``j`` is one model input); the template's
fixed context keeps its real embeddings. ``f`` is the attributed output (``prob``, ``logits`` or
``log_odds``) of the explained class at the last position.

Differences from the public code, all deliberate: the public code resets non-monotone dimensions to
``prev - (prev - b)/m`` (a geometric walk that leaves a large last jump to the baseline), here they
go onto the straight line, clamped to stay monotone; monotonicity of candidates is judged against
the previous *path point* (the public code mixes the raw previous word and the path point); when
every candidate was already used, the best used one is taken again (the public code falls back to
the baseline word or fails); and ``budget`` counts gradient evaluations (Captum's ``n_steps``), so
the public code's ``m`` anchors is ``budget = m + 1`` here.

Anchors and gradient evaluations are separate settings. With one evaluation per anchor (the
papers' method, the default) the sum of attributions does *not* converge to ``f(x) - f(b)`` as
anchors are added: every anchor is a word, so the path keeps jumping by word-sized steps however
many anchors it has. Fixing ``anchors`` and raising ``budget`` evaluates the gradient along the
straight segments between anchors (DIG's up-scaling, generalised), and that Riemann sum does
converge; ``extras["completeness_gap"]`` reports the gap for every explained text.
"""

from __future__ import annotations

import torch

from pi_lightning.attributors._neighbors import VocabularyIndex
from pi_lightning.attributors.base import Attributor, budget_count, parse_budget, register
from pi_lightning.inference import model_mode
from pi_lightning.result import Attribution

__all__ = ["UDIG", "discretized_path", "resample_path"]

STRATEGIES = ("greedy", "maxcount")
PATHS = ("udig", "dig")
BASELINES = ("mask", "pad", "unk", "zero")


def discretized_path(
    index: VocabularyIndex,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    anchors: int,
    *,
    neighbors: int = 30,
    strategy: str = "greedy",
    path: str = "udig",
    input_ids: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone discretized paths from baselines to inputs through (near-)vocabulary embeddings.

    Args:
        index: nearest-neighbour index of the vocabulary embedding table.
        inputs: ``(T, D)`` path ends (the input tokens' embeddings).
        baselines: ``(T, D)`` path starts.
        anchors: number ``a`` of anchor words per token (the path has ``a + 1`` segments).
        neighbors: candidates per anchor (``k`` nearest vocabulary embeddings).
        strategy: ``"greedy"`` or ``"maxcount"``.
        path: ``"udig"`` (neighbours of the line point) or ``"dig"`` (neighbours of the previous word).
        input_ids: ``(T,)`` the input tokens' ids; never chosen as anchors, and DIG's walk starts there.
        exclude: ``(T, e)`` further ids never chosen as anchors (e.g. the baseline's tokens); ``-1`` pads.

    Returns:
        ``(points, words)``: ``(a + 2, T, D)`` float32 path points with ``points[0] = baselines``
        and ``points[a + 1] = inputs``, and ``(a, T)`` ids of the vocabulary word behind
        ``points[1:a + 1]`` (before monotonisation). Ids are avoided in this order of preference:
        excluded ids, then words already on the token's path.

    Example:
        >>> table = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 0.75], [5.0, -5.0]])
        >>> pts, words = discretized_path(VocabularyIndex(table), table[1:2], table[0:1], anchors=1,
        ...                               neighbors=3, input_ids=torch.tensor([1]))
        >>> words.tolist(), pts[:, 0].tolist()
        ([[2]], [[0.0, 0.0], [1.0, 0.75], [2.0, 2.0]])
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}.")
    if path not in PATHS:
        raise ValueError(f"Unknown path {path!r}: expected one of {', '.join(PATHS)}.")
    if not isinstance(anchors, int) or isinstance(anchors, bool) or anchors < 0:
        raise ValueError(f"anchors must be a non-negative int (anchor words per token), got {anchors!r}.")
    if inputs.shape != baselines.shape or inputs.dim() != 2:
        raise ValueError(
            f"inputs and baselines must both be (tokens, hidden), got {tuple(inputs.shape)} and "
            f"{tuple(baselines.shape)}."
        )
    if path == "dig" and input_ids is None:
        raise ValueError("path='dig' walks the vocabulary from each input word: pass input_ids.")
    table = index.table
    V = table.shape[0]
    k = min(int(neighbors), V)
    T = inputs.shape[0]
    device = table.device
    x = inputs.detach().to(device, torch.float32)
    b = baselines.detach().to(device, torch.float32)
    hard = torch.full((T, 0), -1, dtype=torch.long, device=device)
    if input_ids is not None:
        hard = torch.cat([hard, input_ids.to(device).reshape(T, 1)], 1)
    if exclude is not None:
        hard = torch.cat([hard, exclude.to(device).reshape(T, -1)], 1)
    used = torch.full((T, anchors), -1, dtype=torch.long, device=device)
    rows = torch.arange(T, device=device)

    points = [x]
    words = []
    prev = x
    prev_word = input_ids.to(device) if input_ids is not None else None
    # (a, 1, 1) fractions -> (a, T, D) line points, nearest the input first.
    fracs = torch.arange(anchors, 0, -1, device=device, dtype=torch.float32) / (anchors + 1)
    lines = b + fracs[:, None, None] * (x - b)
    # UDIG's candidates do not depend on earlier choices: one batched search for all anchors.
    udig_cands = index.knn(lines, k)[1] if path == "udig" and anchors else None  # (a, T, k)
    for n_used in range(anchors):
        line = lines[n_used]
        # (T, k) candidates, nearest first.
        cand = udig_cands[n_used] if udig_cands is not None else index.knn(table[prev_word].float(), k)[1]
        emb = table[cand].float()  # (T, k, D)
        lo, hi = torch.minimum(b, prev), torch.maximum(b, prev)
        mono = (emb >= lo[:, None]) & (emb <= hi[:, None])  # (T, k, D)
        fill = torch.clamp(line, lo, hi)  # the line point, kept between b and prev
        monotonised = torch.where(mono, emb, fill[:, None])
        score = (emb - monotonised).norm(dim=-1) if strategy == "greedy" else -mono.sum(-1).float()
        # (T, k, e) -> (T, k): avoidance level 2 = excluded, 1 = already on the path, 0 = free.
        level = 2 * (cand[:, :, None] == hard[:, None, :]).any(-1).long()
        level += (cand[:, :, None] == used[:, None, :n_used]).any(-1).long()
        best_level = level.min(dim=-1, keepdim=True).values
        # argmin returns the first minimum: ties go to the candidate nearest the query.
        choice = torch.where(level == best_level, score, torch.inf).argmin(dim=-1)
        point = monotonised[rows, choice]
        word = cand[rows, choice]
        used[:, n_used] = word
        points.append(point)
        words.append(word)
        prev, prev_word = point, word
    points.append(b)
    pts = torch.stack(points[::-1])
    ids = torch.stack(words[::-1]) if words else torch.zeros((0, T), dtype=torch.long, device=device)
    return pts, ids


def resample_path(points: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps + 1`` points evenly spaced in the anchor index along a piecewise-linear path.

    With ``a + 1`` segments (``points`` of length ``a + 2``), point ``i`` sits at parameter
    ``u = i (a + 1) / steps`` between anchor ``floor(u)`` and the next. ``steps = a + 1`` returns
    the anchor points themselves (UDIG); ``steps = s (a + 1)`` splits every segment in ``s`` (DIG's
    up-scaling), so that the Riemann sum converges to ``f(x) - f(b)`` as ``s`` grows.

    Args:
        points: ``(a + 2, ...)`` path points.
        steps: number of resampled segments.

    Returns:
        ``(steps + 1, ...)`` points, the first and last unchanged.

    Example:
        >>> resample_path(torch.tensor([[0.0], [1.0], [3.0]]), 4)[:, 0].tolist()
        [0.0, 0.5, 1.0, 2.0, 3.0]
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int (gradient evaluations), got {steps!r}.")
    segs = points.shape[0] - 1
    if steps == segs:
        return points
    # Exact integer arithmetic: u_i = i * segs / steps = lo_i + frac_i.
    num = torch.arange(steps + 1, device=points.device) * segs
    lo = torch.div(num, steps, rounding_mode="floor").clamp(max=segs - 1)
    frac = ((num - lo * steps).double() / steps).to(points.dtype)
    # (steps + 1,) -> (steps + 1, 1, ..., 1) to broadcast over the point dimensions.
    frac = frac.view(-1, *([1] * (points.dim() - 1)))
    return points[lo] + frac * (points[lo + 1] - points[lo])


@register
class UDIG(Attributor):
    """Uniform Discretized Integrated Gradients (and DIG) for decoder-only classifiers.

    Args:
        model: a transformers decoder-only ``*ForSequenceClassification`` (or its peft wrapper).
        tokenizer: its fast tokenizer.
        budget: forward+backward passes (gradient evaluations along the path) per text: an int, or a
            multiple of the number of features n (default ``"n"``, the paper's Integrated Gradients
            budget, cost ``2n``). Besides them UDIG runs the unmasked prediction pass and two forward
            passes at the path's ends (``f_x``, ``f_b``).
        anchors: anchor words per token path; ``None`` = ``budget - 1`` (one gradient per anchor, as
            in the UDIG and DIG papers). Fewer anchors with a larger budget splits each segment
            between anchors evenly, which makes the completeness gap shrink as the budget grows.
        neighbors: candidate vocabulary words per anchor (30 in the UDIG code).
        strategy: ``"greedy"`` (candidate closest to its monotonised copy) or ``"maxcount"``
            (candidate with the most monotone dimensions).
        path: ``"udig"`` (candidates near the straight line) or ``"dig"`` (kNN walk from the word).
        baseline: path start for every text token: ``"mask"`` (the embedding of the attributor's
            mask, averaged over its tokens if it has several: the ``[MASK]`` of the papers; the
            paper's ``"..."`` under ``mask="remove"``, which has no embedding),
            ``"pad"``, ``"unk"``, ``"zero"`` or a token id.
        **kwargs: granularity, template, mask, output, max_tokens (see :class:`Attributor`).

    Example:
        >>> from pi_lightning.testing import tiny_classifier, tiny_tokenizer
        >>> tok = tiny_tokenizer("gpt2")
        >>> udig = UDIG(tiny_classifier("gpt2", tokenizer=tok), tok, budget=4)
        >>> [a] = udig.attribute("a good movie", target=1)
        >>> a.features.texts, a.scores.shape, a.forward_passes
        (('a', 'good', 'movie'), torch.Size([3]), 9.0)
    """

    name = "udig"
    cost = "2n"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        budget: int | str = "n",
        anchors: int | None = None,
        neighbors: int = 30,
        strategy: str = "greedy",
        path: str = "udig",
        baseline: str | int = "mask",
        **kwargs,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._budget = parse_budget(budget, "forward+backward passes, one per gradient evaluation")
        if anchors is not None and (not isinstance(anchors, int) or isinstance(anchors, bool) or anchors < 0):
            raise ValueError(f"anchors must be a non-negative int or None (budget - 1), got {anchors!r}.")
        if not isinstance(neighbors, int) or isinstance(neighbors, bool) or neighbors < 1:
            raise ValueError(
                f"neighbors must be a positive int (candidate words per anchor), got {neighbors!r}."
            )
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}.")
        if path not in PATHS:
            raise ValueError(f"Unknown path {path!r}: expected one of {', '.join(PATHS)}.")
        self.budget, self.anchors = budget, anchors
        self.neighbors, self.strategy, self.path = neighbors, strategy, path
        mult, fixed = self._budget
        self.cost = f"{2 * mult:g}n" if fixed is None else f"{2 * fixed}x"
        get_emb = getattr(model, "get_input_embeddings", None)
        self.embedding = get_emb() if callable(get_emb) else None
        if not isinstance(getattr(self.embedding, "weight", None), torch.Tensor):
            raise TypeError(
                f"{type(model).__name__}.get_input_embeddings() gave no embedding table; UDIG needs the "
                "model's input word embeddings (a transformers model or its peft wrapper)."
            )
        self.index = VocabularyIndex.shared(self.embedding)
        V = self.index.table.shape[0]
        self._baseline_ids = self._resolve_baseline(baseline, V)
        self.baseline = baseline

    def _resolve_baseline(self, baseline, V: int) -> dict[bool, tuple[int, ...]] | None:
        """Token ids whose mean embedding is the baseline, per ``space_before`` (None = zero vector)."""
        if isinstance(baseline, bool) or not isinstance(baseline, (int, str)):
            raise TypeError(f"baseline must be 'mask', 'pad', 'unk', 'zero' or a token id, got {baseline!r}.")
        if isinstance(baseline, int):
            if not 0 <= baseline < V:
                raise ValueError(f"baseline token id {baseline} is outside the embedding table (0..{V - 1}).")
            return {True: (baseline,), False: (baseline,)}
        if baseline not in BASELINES:
            raise ValueError(
                f"Unknown baseline {baseline!r}: expected one of {', '.join(BASELINES)} or a token id."
            )
        if baseline == "zero":
            return None
        if baseline == "mask":  # under mask='remove': the paper's '...' (Masker.baseline_ids)
            ids = {sb: tuple(self.masker.baseline_ids(sb)) for sb in (True, False)}
        else:
            tid = getattr(self.tokenizer, f"{baseline}_token_id", None)
            if tid is None:
                raise ValueError(
                    f"baseline={baseline!r} but the tokenizer has no {baseline} token; use 'mask' or a "
                    "token id."
                )
            ids = {True: (int(tid),), False: (int(tid),)}
        for t in ids.values():
            if not t or not all(0 <= i < V for i in t):
                raise ValueError(f"Baseline token ids {t} are not rows of the {V}-row embedding table.")
        return ids

    def _last_logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` input embeddings -> ``(B, C)`` head output at the last position."""
        ones = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return self.adapter.per_position_logits(None, ones, inputs_embeds=embeds)[:, -1, :]

    def attribute(self, texts, target="predicted") -> list[Attribution]:
        # The path's gradients need autograd, also when called inside Lightning's inference mode.
        with torch.inference_mode(False):
            return super().attribute(texts, target)

    def explain(self, feats, targets, finals, state) -> list[Attribution]:
        return [self._attribute_one(f, c, lg) for f, c, lg in zip(feats, targets, finals, strict=True)]

    def _attribute_one(self, f, c: int, final_logits: torch.Tensor) -> Attribution:
        table = self.index.table
        device = table.device
        a, z = f.context_end, f.suffix_start
        ids = torch.tensor(f.input_ids, dtype=torch.long, device=device)
        text_ids = ids[a:z]
        T = z - a
        # Per text token: its feature's baseline ids (mask tokenized as that feature was).
        owner = [i for i, (s, e) in enumerate(f.spans) for _ in range(s, e)]
        if self._baseline_ids is None:
            b = torch.zeros((T, table.shape[1]), dtype=torch.float32, device=device)
            exclude = None
        else:
            per_tok = [self._baseline_ids[f.space_before[i]] for i in owner]
            width = max(len(t) for t in per_tok)
            exclude = torch.tensor([list(t) + [-1] * (width - len(t)) for t in per_tok], device=device)
            b = torch.stack([table[list(t)].float().mean(0) for t in per_tok])
        m = budget_count(self._budget, f.n)
        n_anchors = m - 1 if self.anchors is None else self.anchors
        anchor_points, words = discretized_path(
            self.index,
            table[text_ids].float(),
            b,
            n_anchors,
            neighbors=self.neighbors,
            strategy=self.strategy,
            path=self.path,
            input_ids=text_ids,
            exclude=exclude,
        )
        points = resample_path(anchor_points, m)  # (m + 1, T, D)

        scale = getattr(self.embedding, "embed_scale", None)  # embeddings scaled inside the module (Gemma)
        scale = 1.0 if scale is None else float(scale)
        L = len(f.input_ids)
        dtype = next(p for p in self.model.parameters() if p.is_floating_point()).dtype
        grads, outs = [], []
        with model_mode(self.model, "grad"):
            # (L,) -> (1, L, D): real embeddings of the fixed context.
            context = self.embedding(ids[None]).detach().to(dtype)
            rows = max(1, self.adapter.max_tokens // L)
            for s in range(0, m, rows):
                p = points[s : min(s + rows, m)].to(dtype).requires_grad_(True)  # (B, T, D)
                B = p.shape[0]
                embeds = torch.cat(
                    [context[:, :a].expand(B, -1, -1), p * scale, context[:, z:].expand(B, -1, -1)], dim=1
                )
                out = self.outputs(self._last_logits(embeds), c)  # (B,)
                (g,) = torch.autograd.grad(out.sum(), p)
                grads.append(g.double())
                outs.append(out.detach())
        # (m, T, D) gradients at P_0..P_{m-1}, times the segments P_{j+1} - P_j, summed over j and D.
        seg = points[1:].double() - points[:-1].double()
        per_token = (torch.cat(grads) * seg).sum(dim=(0, 2)).cpu()
        scores = torch.stack([per_token[s - a : e - a].sum() for s, e in f.spans])
        f_x = float(self.outputs(final_logits, c))
        f_b = float(torch.cat(outs)[0])
        return self.result(
            f,
            c,
            final_logits,
            scores,
            base_value=f_b,
            forward_passes=1.0 + 2.0 * m,
            extras={
                "steps": m,
                "completeness_gap": float(scores.sum()) - (f_x - f_b),
                "anchor_ids": words.cpu(),
                "path": self.path,
                "strategy": self.strategy,
            },
        )

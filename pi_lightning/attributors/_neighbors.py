"""Exact nearest vocabulary embeddings (L2), fast enough for 50k-260k-token vocabularies.

Discretized path methods (UDIG, DIG) look up, for thousands of points in embedding space, the
nearest rows of the model's input embedding table. A Python loop over the vocabulary, or a
per-point ``norm(table - p)``, costs a ``(V, D)`` temporary per point; here distances come from one
matrix product per chunk of points, ``|p - e|^2 = |p|^2 - 2 p.e + |e|^2``, with the row norms
``|e|^2`` cached. Because that expansion loses precision for near-identical vectors (and the table
may be half precision), the best ``2k`` candidates are re-ranked by exact float32 distances.

The table changes while the model trains, so the cache is keyed on the table's storage pointer,
shape, dtype, its autograd version counter (bumped by every in-place update an optimizer makes)
and a checksum of a few rows (which also catches writes through ``weight.data``, which do not bump
the version counter, when they touch those rows).
"""

from __future__ import annotations

import weakref

import torch

__all__ = ["VocabularyIndex"]

# Number of table rows summed for the cheap checksum.
_CHECK_ROWS = 64

# id(embedding module) -> (weak reference to it, its index): one cache per table, kept across
# attributors built afresh for every validation epoch.
_SHARED: dict[int, tuple[weakref.ref, VocabularyIndex]] = {}


class VocabularyIndex:
    """k-nearest rows of an embedding table by L2 distance, batched, with a self-invalidating cache.

    Args:
        embedding: an ``nn.Embedding`` (e.g. ``model.get_input_embeddings()``) or a ``(V, D)`` tensor.
            The table is read at every query, so updates made by training are seen.
        max_elements: bound on the number of float elements of one distance block
            (``points x V``); larger queries are split into chunks.

    Example:
        >>> table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
        >>> dist, idx = VocabularyIndex(table).knn(torch.tensor([[0.9, 0.1]]), k=2)
        >>> idx.tolist()
        [[1, 0]]
    """

    def __init__(self, embedding: torch.nn.Module | torch.Tensor, max_elements: int = 2**25) -> None:
        if isinstance(embedding, torch.nn.Module):
            weight = getattr(embedding, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
                raise TypeError(
                    f"Expected an embedding module with a 2-D .weight (vocabulary x hidden), got "
                    f"{type(embedding).__name__}. Pass model.get_input_embeddings() or the (V, D) table."
                )
        elif not isinstance(embedding, torch.Tensor) or embedding.dim() != 2:
            raise TypeError(
                f"Expected an nn.Embedding or a (V, D) tensor, got {type(embedding).__name__}"
                + (f" of shape {tuple(embedding.shape)}" if isinstance(embedding, torch.Tensor) else "")
                + "."
            )
        if not isinstance(max_elements, int) or max_elements < 1:
            raise ValueError(f"max_elements must be a positive int, got {max_elements!r}.")
        self._source = embedding
        self.max_elements = max_elements
        self._key: tuple | None = None
        self._sq_norms: torch.Tensor | None = None
        #: How many times the cached row norms were (re)computed.
        self.refreshes = 0

    @classmethod
    def shared(cls, embedding: torch.nn.Module) -> VocabularyIndex:
        """The one index of an embedding module, reused by everything that asks for it.

        The entry is dropped when the module is garbage-collected.
        """
        entry = _SHARED.get(id(embedding))
        if entry is not None and entry[0]() is embedding:
            return entry[1]
        index = cls(embedding)
        _SHARED[id(embedding)] = (weakref.ref(embedding), index)
        weakref.finalize(embedding, _SHARED.pop, id(embedding), None)
        return index

    @property
    def table(self) -> torch.Tensor:
        """The current ``(V, D)`` table (detached; shares storage with the model's weight)."""
        t = self._source.weight if isinstance(self._source, torch.nn.Module) else self._source
        return t.detach()

    def _cache_key(self, t: torch.Tensor) -> tuple:
        src = self._source.weight if isinstance(self._source, torch.nn.Module) else self._source
        stride = max(1, t.shape[0] // _CHECK_ROWS)
        checksum = float(t[::stride].double().sum())
        return (t.data_ptr(), tuple(t.shape), t.dtype, t.device, src._version, checksum)

    def squared_norms(self) -> torch.Tensor:
        """``(V,)`` float32 squared row norms of the current table, recomputed only when it changed."""
        t = self.table
        key = self._cache_key(t)
        if key != self._key or self._sq_norms is None:
            # (V, D) -> (V,)
            self._sq_norms = t.float().pow(2).sum(-1)
            self._key = key
            self.refreshes += 1
        return self._sq_norms

    def knn(self, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest table rows of each point.

        Args:
            points: ``(..., D)`` query points (any float dtype, any device; moved to the table's).
            k: number of neighbours (at most the vocabulary size).

        Returns:
            ``(distances, indices)``, both ``(..., k)``, nearest first; distances are float32 L2.
        """
        t = self.table
        V, D = t.shape
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= V:
            raise ValueError(f"k must be an int in 1..{V} (the vocabulary size), got {k!r}.")
        if points.shape[-1] != D:
            raise ValueError(
                f"Query points have {points.shape[-1]} dimensions but the embedding table has {D}: "
                "pass points in the model's input embedding space."
            )
        sq = self.squared_norms()
        lead = points.shape[:-1]
        # (..., D) -> (Q, D)
        q = points.detach().reshape(-1, D).to(t.device, torch.float32)
        kc = min(V, 2 * k)
        # Half-precision tables multiply in their own dtype on GPU (tensor cores); the candidates are
        # re-ranked in float32 below. Elsewhere the product is float32.
        half_gpu = t.dtype in (torch.float16, torch.bfloat16) and t.is_cuda
        tm = t if half_gpu or t.dtype == torch.float32 else t.float()
        chunk = max(1, self.max_elements // max(V, kc * D))
        dists, idxs = [], []
        for s in range(0, q.shape[0], chunk):
            qc = q[s : s + chunk]
            prod = (qc.to(tm.dtype) @ tm.T).float()
            # |p|^2 is constant per row: ranking by |e|^2 - 2 p.e is enough to pick candidates.
            approx = sq[None, :] - 2.0 * prod
            cand = approx.topk(kc, dim=-1, largest=False).indices  # (q, kc)
            # (q, kc, D): exact float32 distances of the candidates.
            exact = (t[cand].float() - qc[:, None, :]).norm(dim=-1)
            d, order = exact.sort(dim=-1, stable=True)
            dists.append(d[:, :k])
            idxs.append(cand.gather(1, order[:, :k]))
        dist = torch.cat(dists) if dists else q.new_zeros((0, k))
        idx = torch.cat(idxs) if idxs else torch.zeros((0, k), dtype=torch.long, device=t.device)
        # (Q, k) -> (..., k)
        return dist.reshape(*lead, k), idx.reshape(*lead, k)
